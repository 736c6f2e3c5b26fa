//! COLMAP sparse models (`cameras`, `images`, `points3D`), binary and text, read and written.
//!
//! The layouts follow COLMAP's own `read_write_model.py`. Readers check every count against the
//! bytes or lines actually present before allocating, reject non-finite poses and points, and name
//! the file and record in every error.

mod binary;
mod text;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{FormatError, Result};

pub use binary::{
    parse_cameras, parse_images, parse_points3d, read_cameras_bin, read_images_bin, read_points3d_bin,
    write_cameras_bin, write_images_bin, write_points3d_bin,
};
pub use text::{
    read_cameras_txt, read_images_txt, read_points3d_txt, write_cameras_txt, write_images_txt, write_points3d_txt,
};

/// COLMAP's camera models, with their numeric ids and parameter counts (COLMAP
/// `src/colmap/sensor/models.h`, checked against pycolmap 4.2). Ids are positions in [`CameraModel::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CameraModel {
    SimplePinhole,
    Pinhole,
    SimpleRadial,
    Radial,
    OpenCv,
    OpenCvFisheye,
    FullOpenCv,
    Fov,
    SimpleRadialFisheye,
    RadialFisheye,
    ThinPrismFisheye,
    RadTanThinPrismFisheye,
    SimpleDivision,
    Division,
    SimpleFisheye,
    Fisheye,
    Eucm,
    Equirectangular,
}

/// How a model's parameters begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FocalLayout {
    /// `f, cx, cy, ...`
    Single,
    /// `fx, fy, cx, cy, ...`
    Separate,
    /// No focal length (equirectangular: `w, h`).
    None,
}

impl CameraModel {
    pub const ALL: [CameraModel; 18] = [
        CameraModel::SimplePinhole,
        CameraModel::Pinhole,
        CameraModel::SimpleRadial,
        CameraModel::Radial,
        CameraModel::OpenCv,
        CameraModel::OpenCvFisheye,
        CameraModel::FullOpenCv,
        CameraModel::Fov,
        CameraModel::SimpleRadialFisheye,
        CameraModel::RadialFisheye,
        CameraModel::ThinPrismFisheye,
        CameraModel::RadTanThinPrismFisheye,
        CameraModel::SimpleDivision,
        CameraModel::Division,
        CameraModel::SimpleFisheye,
        CameraModel::Fisheye,
        CameraModel::Eucm,
        CameraModel::Equirectangular,
    ];

    /// COLMAP's name, number of parameters and focal layout.
    fn spec(self) -> (&'static str, usize, FocalLayout) {
        use FocalLayout::{None, Separate, Single};
        match self {
            CameraModel::SimplePinhole => ("SIMPLE_PINHOLE", 3, Single),
            CameraModel::Pinhole => ("PINHOLE", 4, Separate),
            CameraModel::SimpleRadial => ("SIMPLE_RADIAL", 4, Single),
            CameraModel::Radial => ("RADIAL", 5, Single),
            CameraModel::OpenCv => ("OPENCV", 8, Separate),
            CameraModel::OpenCvFisheye => ("OPENCV_FISHEYE", 8, Separate),
            CameraModel::FullOpenCv => ("FULL_OPENCV", 12, Separate),
            CameraModel::Fov => ("FOV", 5, Separate),
            CameraModel::SimpleRadialFisheye => ("SIMPLE_RADIAL_FISHEYE", 4, Single),
            CameraModel::RadialFisheye => ("RADIAL_FISHEYE", 5, Single),
            CameraModel::ThinPrismFisheye => ("THIN_PRISM_FISHEYE", 12, Separate),
            CameraModel::RadTanThinPrismFisheye => ("RAD_TAN_THIN_PRISM_FISHEYE", 16, Separate),
            CameraModel::SimpleDivision => ("SIMPLE_DIVISION", 4, Single),
            CameraModel::Division => ("DIVISION", 5, Separate),
            CameraModel::SimpleFisheye => ("SIMPLE_FISHEYE", 3, Single),
            CameraModel::Fisheye => ("FISHEYE", 4, Separate),
            CameraModel::Eucm => ("EUCM", 6, Separate),
            CameraModel::Equirectangular => ("EQUIRECTANGULAR", 2, None),
        }
    }

    pub fn id(self) -> i32 {
        CameraModel::ALL
            .iter()
            .position(|&m| m == self)
            .expect("every model is in ALL") as i32
    }

    pub fn from_id(id: i32) -> Option<Self> {
        usize::try_from(id).ok().and_then(|i| CameraModel::ALL.get(i).copied())
    }

    pub fn name(self) -> &'static str {
        self.spec().0
    }

    pub fn from_name(name: &str) -> Option<Self> {
        CameraModel::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Number of parameters COLMAP stores for the model.
    pub fn num_params(self) -> usize {
        self.spec().1
    }

    pub fn focal_layout(self) -> FocalLayout {
        self.spec().2
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColmapCamera {
    pub id: u32,
    pub model: CameraModel,
    pub width: u64,
    pub height: u64,
    pub params: Vec<f64>,
}

impl ColmapCamera {
    /// Focal lengths and principal point `(fx, fy, cx, cy)`; `None` for models without them
    /// (equirectangular).
    pub fn intrinsics(&self) -> Option<(f64, f64, f64, f64)> {
        let p = &self.params;
        match self.model.focal_layout() {
            FocalLayout::Single => Some((p[0], p[0], p[1], p[2])),
            FocalLayout::Separate => Some((p[0], p[1], p[2], p[3])),
            FocalLayout::None => None,
        }
    }

    /// The parameters after the focal lengths and principal point: distortion coefficients.
    pub fn distortion_params(&self) -> &[f64] {
        match self.model.focal_layout() {
            FocalLayout::Single => &self.params[3..],
            FocalLayout::Separate => &self.params[4..],
            FocalLayout::None => &[],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point2D {
    pub xy: [f64; 2],
    /// The 3D point this keypoint observes, if triangulated.
    pub point3d_id: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColmapImage {
    pub id: u32,
    /// World-to-camera rotation as a quaternion (w, x, y, z).
    pub qvec: [f64; 4],
    /// World-to-camera translation.
    pub tvec: [f64; 3],
    pub camera_id: u32,
    pub name: String,
    pub points2d: Vec<Point2D>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackElement {
    pub image_id: u32,
    /// Index into the image's `points2d`.
    pub point2d_index: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point3D {
    pub id: u64,
    pub xyz: [f64; 3],
    pub rgb: [u8; 3],
    /// Mean reprojection error in pixels.
    pub error: f64,
    pub track: Vec<TrackElement>,
}

/// A whole sparse model, keyed by COLMAP ids.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ColmapModel {
    pub cameras: BTreeMap<u32, ColmapCamera>,
    pub images: BTreeMap<u32, ColmapImage>,
    pub points: BTreeMap<u64, Point3D>,
}

/// The path of one of a model folder's files (`stem` is `cameras`, `images` or `points3D`): the
/// binary file if present, else the text one. Used to name files in error messages.
pub fn model_file(dir: &Path, stem: &str) -> std::path::PathBuf {
    let binary = dir.join(format!("{stem}.bin"));
    if binary.exists() {
        binary
    } else {
        dir.join(format!("{stem}.txt"))
    }
}

/// On-disk flavour of a model folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    Binary,
    Text,
}

impl ModelFormat {
    fn extension(self) -> &'static str {
        match self {
            ModelFormat::Binary => "bin",
            ModelFormat::Text => "txt",
        }
    }
}

impl ColmapModel {
    /// Reads `cameras`, `images` and `points3D` from `dir`, binary if `cameras.bin` exists, else
    /// text; then checks that the three files agree with each other.
    pub fn read(dir: &Path) -> Result<Self> {
        let format = if dir.join("cameras.bin").exists() {
            ModelFormat::Binary
        } else if dir.join("cameras.txt").exists() {
            ModelFormat::Text
        } else {
            return Err(FormatError::invalid(
                dir,
                "sparse model",
                "no cameras.bin or cameras.txt here; expected a COLMAP model folder such as <scene>/sparse/0",
            ));
        };
        Self::read_format(dir, format)
    }

    pub fn read_format(dir: &Path, format: ModelFormat) -> Result<Self> {
        let ext = format.extension();
        let file = |stem: &str| dir.join(format!("{stem}.{ext}"));
        let model = match format {
            ModelFormat::Binary => ColmapModel {
                cameras: read_cameras_bin(&file("cameras"))?,
                images: read_images_bin(&file("images"))?,
                points: read_points3d_bin(&file("points3D"))?,
            },
            ModelFormat::Text => ColmapModel {
                cameras: read_cameras_txt(&file("cameras"))?,
                images: read_images_txt(&file("images"))?,
                points: read_points3d_txt(&file("points3D"))?,
            },
        };
        model.check_references(dir)?;
        Ok(model)
    }

    /// Writes the three files into `dir` (created if missing), each atomically.
    pub fn write(&self, dir: &Path, format: ModelFormat) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
        let ext = format.extension();
        let file = |stem: &str| dir.join(format!("{stem}.{ext}"));
        match format {
            ModelFormat::Binary => {
                write_cameras_bin(&file("cameras"), &self.cameras)?;
                write_images_bin(&file("images"), &self.images)?;
                write_points3d_bin(&file("points3D"), &self.points)
            }
            ModelFormat::Text => {
                write_cameras_txt(&file("cameras"), &self.cameras)?;
                write_images_txt(&file("images"), &self.images)?;
                write_points3d_txt(&file("points3D"), &self.points)
            }
        }
    }

    /// Cross-file consistency: images name existing cameras; tracks name existing images and
    /// keypoints; keypoints name existing 3D points.
    pub fn check_references(&self, dir: &Path) -> Result<()> {
        for image in self.images.values() {
            let record = || format!("image {} {:?}", image.id, image.name);
            if !self.cameras.contains_key(&image.camera_id) {
                return Err(FormatError::invalid(
                    model_file(dir, "images"),
                    record(),
                    format!("camera {} is not in the cameras file", image.camera_id),
                ));
            }
            for (index, point) in image.points2d.iter().enumerate() {
                if let Some(id) = point.point3d_id
                    && !self.points.contains_key(&id)
                {
                    return Err(FormatError::invalid(
                        model_file(dir, "images"),
                        record(),
                        format!("keypoint {index} observes 3D point {id}, which is not in the points3D file"),
                    ));
                }
            }
        }
        for point in self.points.values() {
            for element in &point.track {
                let ok = self
                    .images
                    .get(&element.image_id)
                    .is_some_and(|image| (element.point2d_index as usize) < image.points2d.len());
                if !ok {
                    return Err(FormatError::invalid(
                        model_file(dir, "points3D"),
                        format!("point {}", point.id),
                        format!(
                            "track names image {} keypoint {}, which does not exist",
                            element.image_id, element.point2d_index
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Largest id either format carries: `read_write_model.py` reads ids as signed 32-bit integers, so
/// larger ones would not survive a trip through other tools.
const MAX_ID: u32 = i32::MAX as u32;

fn check_id(path: &Path, record: &dyn Fn() -> String, what: &str, id: u32) -> Result<()> {
    if id > MAX_ID {
        return Err(FormatError::invalid(
            path,
            record(),
            format!("{what} {id} is above {MAX_ID}, the largest id COLMAP model files carry"),
        ));
    }
    Ok(())
}

// Shared record checks of both readers and both writers, so every format accepts the same models.

fn check_camera(path: &Path, camera: &ColmapCamera) -> Result<()> {
    let record = format!("camera {}", camera.id);
    check_id(path, &|| record.clone(), "camera id", camera.id)?;
    if camera.params.iter().any(|v| !v.is_finite()) {
        return Err(FormatError::invalid(
            path,
            record,
            format!("non-finite parameter in {:?}", camera.params),
        ));
    }
    if camera.width == 0 || camera.height == 0 || camera.width > u32::MAX as u64 || camera.height > u32::MAX as u64 {
        return Err(FormatError::invalid(
            path,
            record,
            format!("image size {}x{} is not usable", camera.width, camera.height),
        ));
    }
    if let Some((fx, fy, _, _)) = camera.intrinsics()
        && (fx <= 0.0 || fy <= 0.0)
    {
        return Err(FormatError::invalid(
            path,
            record,
            format!("focal length must be positive, got fx={fx} fy={fy}"),
        ));
    }
    Ok(())
}

fn check_image(path: &Path, image: &ColmapImage) -> Result<()> {
    let record = || format!("image {} {:?}", image.id, image.name);
    if image.qvec.iter().chain(&image.tvec).any(|v| !v.is_finite()) {
        return Err(FormatError::invalid(
            path,
            record(),
            format!("pose is not finite: qvec {:?} tvec {:?}", image.qvec, image.tvec),
        ));
    }
    let norm = image.qvec.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm < 1e-12 {
        return Err(FormatError::invalid(path, record(), "rotation quaternion is zero"));
    }
    check_id(path, &record, "image id", image.id)?;
    check_id(path, &record, "camera id", image.camera_id)?;
    if image.name.is_empty() {
        return Err(FormatError::invalid(path, record(), "image name is empty"));
    }
    // The binary format ends names at NUL; the text format splits fields at whitespace.
    if image.name.contains('\0') {
        return Err(FormatError::invalid(path, record(), "image name contains a NUL byte"));
    }
    Ok(())
}

fn check_point(path: &Path, point: &Point3D) -> Result<()> {
    let record = || format!("point {}", point.id);
    if point.xyz.iter().any(|v| !v.is_finite()) {
        return Err(FormatError::invalid(
            path,
            record(),
            format!("position is not finite: {:?}", point.xyz),
        ));
    }
    for element in &point.track {
        check_id(path, &record, "track image id", element.image_id)?;
        check_id(path, &record, "track keypoint index", element.point2d_index)?;
    }
    Ok(())
}

/// Whether the text format can hold an image name: it reads a name as the rest of the line's
/// fields joined by single spaces.
fn is_text_safe_name(name: &str) -> bool {
    name.split_whitespace().collect::<Vec<_>>().join(" ") == name
}

/// Adds a parsed record, refusing a second record with the same id.
fn insert_unique<K: Ord + Copy + std::fmt::Display, V>(
    records: &mut BTreeMap<K, V>,
    path: &Path,
    kind: &str,
    id: K,
    record: V,
) -> Result<()> {
    if records.insert(id, record).is_some() {
        return Err(FormatError::invalid(
            path,
            format!("{kind} {id}"),
            format!("{kind} id {id} appears twice"),
        ));
    }
    Ok(())
}

/// A keypoint's 3D point id as stored on disk, where -1 means "not triangulated".
fn point3d_reference(stored: i64) -> std::result::Result<Option<u64>, String> {
    match stored {
        -1 => Ok(None),
        id if id >= 0 => Ok(Some(id as u64)),
        other => Err(format!("keypoint 3D point id {other} is negative but not -1")),
    }
}
