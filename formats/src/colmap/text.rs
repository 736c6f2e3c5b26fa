//! COLMAP's text model files: one record per line (two for images), `#` comments.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use super::binary::wrong_param_count;
use super::{
    CameraModel, ColmapCamera, ColmapImage, Point2D, Point3D, TrackElement, check_camera, check_image, check_point,
    insert_unique, is_text_safe_name, point3d_reference,
};
use crate::atomic::write_atomic;
use crate::{FormatError, Result};

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| FormatError::invalid(path, "file", format!("not UTF-8 text: {e}")))
}

/// Splits one line's fields and parses them with the file, line number and field name in errors.
struct Fields<'a> {
    path: &'a Path,
    line_number: usize,
    fields: std::str::SplitWhitespace<'a>,
}

impl<'a> Fields<'a> {
    fn new(path: &'a Path, line_number: usize, line: &'a str) -> Self {
        Fields {
            path,
            line_number,
            fields: line.split_whitespace(),
        }
    }

    fn invalid(&self, message: String) -> FormatError {
        FormatError::invalid(self.path, format!("line {}", self.line_number), message)
    }

    fn next_str(&mut self, what: &str) -> Result<&'a str> {
        self.fields
            .next()
            .ok_or_else(|| self.invalid(format!("missing {what}")))
    }

    fn next<T: FromStr>(&mut self, what: &str) -> Result<T> {
        let field = self.next_str(what)?;
        field.parse().map_err(|_| {
            self.invalid(format!(
                "{what} {field:?} is not a valid {}",
                std::any::type_name::<T>()
            ))
        })
    }

    fn rest(&mut self) -> Vec<&'a str> {
        self.fields.by_ref().collect()
    }

    fn finish(&mut self) -> Result<()> {
        match self.fields.next() {
            None => Ok(()),
            Some(extra) => Err(self.invalid(format!("unexpected extra field {extra:?}"))),
        }
    }
}

/// Non-empty, non-comment lines with their 1-based numbers.
fn records(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

pub fn read_cameras_txt(path: &Path) -> Result<BTreeMap<u32, ColmapCamera>> {
    let text = read_text(path)?;
    let mut cameras = BTreeMap::new();
    for (line_number, line) in records(&text) {
        let mut f = Fields::new(path, line_number, line);
        let id: u32 = f.next("camera id")?;
        let model_name = f.next_str("camera model")?;
        let model = CameraModel::from_name(model_name).ok_or_else(|| {
            let known: Vec<_> = CameraModel::ALL.iter().map(|m| m.name()).collect();
            f.invalid(format!(
                "unknown camera model {model_name:?}; known models: {}",
                known.join(", ")
            ))
        })?;
        let width = f.next("width")?;
        let height = f.next("height")?;
        let params = f
            .rest()
            .into_iter()
            .map(|p| {
                p.parse::<f64>()
                    .map_err(|_| f.invalid(format!("parameter {p:?} is not a number")))
            })
            .collect::<Result<Vec<_>>>()?;
        if params.len() != model.num_params() {
            return Err(f.invalid(format!(
                "{} needs {} parameters, got {}",
                model.name(),
                model.num_params(),
                params.len()
            )));
        }
        let camera = ColmapCamera {
            id,
            model,
            width,
            height,
            params,
        };
        check_camera(path, &camera)?;
        insert_unique(&mut cameras, path, "camera", id, camera)?;
    }
    Ok(cameras)
}

pub fn read_images_txt(path: &Path) -> Result<BTreeMap<u32, ColmapImage>> {
    let text = read_text(path)?;
    let mut images = BTreeMap::new();
    // Each image has two lines: the pose line and the keypoint line, which may be empty, so
    // lines are taken in pairs after skipping comments (not after skipping empty lines).
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.starts_with('#'));
    while let Some((line_number, line)) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let mut f = Fields::new(path, line_number, line);
        let id: u32 = f.next("image id")?;
        let mut qvec = [0.0; 4];
        for q in &mut qvec {
            *q = f.next("qvec")?;
        }
        let mut tvec = [0.0; 3];
        for t in &mut tvec {
            *t = f.next("tvec")?;
        }
        let camera_id = f.next("camera id")?;
        // Names may contain spaces: everything after the camera id.
        let name = f.rest().join(" ");
        let (points_line_number, points_line) = lines.next().unwrap_or((line_number + 1, ""));
        let mut p = Fields::new(path, points_line_number, points_line);
        let values = p.rest();
        if values.len() % 3 != 0 {
            return Err(p.invalid(format!(
                "keypoint line of image {id} has {} fields, not a multiple of 3 (X Y POINT3D_ID)",
                values.len()
            )));
        }
        let mut points2d = Vec::with_capacity(values.len() / 3);
        for chunk in values.chunks(3) {
            let number = |s: &str| {
                s.parse::<f64>()
                    .map_err(|_| p.invalid(format!("keypoint coordinate {s:?} is not a number")))
            };
            let point3d: i64 = chunk[2]
                .parse()
                .map_err(|_| p.invalid(format!("3D point id {:?} is not an integer", chunk[2])))?;
            let point3d_id = point3d_reference(point3d).map_err(|message| p.invalid(message))?;
            points2d.push(Point2D {
                xy: [number(chunk[0])?, number(chunk[1])?],
                point3d_id,
            });
        }
        let image = ColmapImage {
            id,
            qvec,
            tvec,
            camera_id,
            name,
            points2d,
        };
        check_image(path, &image)?;
        insert_unique(&mut images, path, "image", id, image)?;
    }
    Ok(images)
}

pub fn read_points3d_txt(path: &Path) -> Result<BTreeMap<u64, Point3D>> {
    let text = read_text(path)?;
    let mut points = BTreeMap::new();
    for (line_number, line) in records(&text) {
        let mut f = Fields::new(path, line_number, line);
        let id: u64 = f.next("point id")?;
        let xyz = [f.next("x")?, f.next("y")?, f.next("z")?];
        let rgb = [f.next("r")?, f.next("g")?, f.next("b")?];
        let error = f.next("error")?;
        let values = f.rest();
        if values.len() % 2 != 0 {
            return Err(f.invalid(format!(
                "track of point {id} has {} fields, not pairs of IMAGE_ID POINT2D_IDX",
                values.len()
            )));
        }
        let track = values
            .chunks(2)
            .map(|pair| {
                let image_id = pair[0]
                    .parse()
                    .map_err(|_| f.invalid(format!("track image id {:?} is not a valid id", pair[0])))?;
                let point2d_index = pair[1]
                    .parse()
                    .map_err(|_| f.invalid(format!("track keypoint index {:?} is not a valid index", pair[1])))?;
                Ok(TrackElement {
                    image_id,
                    point2d_index,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        f.finish()?;
        let point = Point3D {
            id,
            xyz,
            rgb,
            error,
            track,
        };
        check_point(path, &point)?;
        insert_unique(&mut points, path, "point", id, point)?;
    }
    Ok(points)
}

// Floats are written with Rust's shortest round-trip formatting, so text models are lossless.

pub fn write_cameras_txt(path: &Path, cameras: &BTreeMap<u32, ColmapCamera>) -> Result<()> {
    let mut out = String::from(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n",
    );
    let _ = writeln!(out, "# Number of cameras: {}", cameras.len());
    for camera in cameras.values() {
        if camera.params.len() != camera.model.num_params() {
            return Err(wrong_param_count(path, camera));
        }
        check_camera(path, camera)?;
        let _ = write!(
            out,
            "{} {} {} {}",
            camera.id,
            camera.model.name(),
            camera.width,
            camera.height
        );
        camera.params.iter().for_each(|p| {
            let _ = write!(out, " {p:?}");
        });
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

pub fn write_images_txt(path: &Path, images: &BTreeMap<u32, ColmapImage>) -> Result<()> {
    let mut out = String::from(
        "# Image list with two lines of data per image:\n#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n#   POINTS2D[] as (X, Y, POINT3D_ID)\n",
    );
    let observations: usize = images.values().map(|i| i.points2d.len()).sum();
    let _ = writeln!(
        out,
        "# Number of images: {}, observations: {observations}",
        images.len()
    );
    for image in images.values() {
        check_image(path, image)?;
        if !is_text_safe_name(&image.name) {
            return Err(FormatError::invalid(
                path,
                format!("image {} {:?}", image.id, image.name),
                "the text format cannot hold this name (it has leading, trailing, repeated or non-space whitespace); write the model as binary",
            ));
        }
        let [qw, qx, qy, qz] = image.qvec;
        let [tx, ty, tz] = image.tvec;
        let _ = writeln!(
            out,
            "{} {qw:?} {qx:?} {qy:?} {qz:?} {tx:?} {ty:?} {tz:?} {} {}",
            image.id, image.camera_id, image.name
        );
        let keypoints: Vec<String> = image
            .points2d
            .iter()
            .map(|p| {
                format!(
                    "{:?} {:?} {}",
                    p.xy[0],
                    p.xy[1],
                    p.point3d_id.map_or(-1, |id| id as i64)
                )
            })
            .collect();
        out.push_str(&keypoints.join(" "));
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

pub fn write_points3d_txt(path: &Path, points: &BTreeMap<u64, Point3D>) -> Result<()> {
    let mut out = String::from(
        "# 3D point list with one line of data per point:\n#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n",
    );
    let _ = writeln!(out, "# Number of points: {}", points.len());
    for point in points.values() {
        check_point(path, point)?;
        let [x, y, z] = point.xyz;
        let [r, g, b] = point.rgb;
        let _ = write!(out, "{} {x:?} {y:?} {z:?} {r} {g} {b} {:?}", point.id, point.error);
        for element in &point.track {
            let _ = write!(out, " {} {}", element.image_id, element.point2d_index);
        }
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}
