//! COLMAP's binary model files: little-endian records as in `read_write_model.py`.

use std::collections::BTreeMap;
use std::path::Path;

use super::{
    CameraModel, ColmapCamera, ColmapImage, Point2D, Point3D, TrackElement, check_camera, check_image, check_point,
    insert_unique, point3d_reference,
};
use crate::atomic::write_atomic;
use crate::{FormatError, Result};

/// A bounds-checked little-endian reader over a whole file that knows which file and record it
/// is in, for its error messages.
struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    position: usize,
    record: String,
}

impl<'a> Reader<'a> {
    fn new(path: &'a Path, bytes: &'a [u8]) -> Self {
        Reader {
            path,
            bytes,
            position: 0,
            record: "header".into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let remaining = self.bytes.len() - self.position;
        if n > remaining {
            return Err(FormatError::invalid(
                self.path,
                self.record.clone(),
                format!(
                    "file is truncated: needed {n} bytes for {what} at byte offset {}, only {remaining} left",
                    self.position
                ),
            ));
        }
        let slice = &self.bytes[self.position..self.position + n];
        self.position += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }
    fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    /// An id stored as a signed 32-bit integer that must not be negative.
    fn id32(&mut self, what: &str) -> Result<u32> {
        let value = self.i32(what)?;
        u32::try_from(value).map_err(|_| self.invalid(format!("{what} is negative ({value})")))
    }

    /// A record count, checked against the bytes left so a corrupt count cannot make us allocate
    /// or loop far beyond the file.
    fn count(&mut self, what: &str, min_record_bytes: usize) -> Result<usize> {
        let count = self.u64(what)?;
        let remaining = (self.bytes.len() - self.position) as u64;
        if count.saturating_mul(min_record_bytes as u64) > remaining {
            return Err(self.invalid(format!(
                "{what} says {count} records of at least {min_record_bytes} bytes, but only {remaining} bytes follow (wrong count or truncated file)"
            )));
        }
        Ok(count as usize)
    }

    fn name(&mut self) -> Result<String> {
        let rest = &self.bytes[self.position..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return Err(self.invalid("image name has no terminating NUL byte (truncated file)".to_string()));
        };
        let name = std::str::from_utf8(&rest[..end])
            .map_err(|_| self.invalid("image name is not UTF-8".to_string()))?
            .to_string();
        self.position += end + 1;
        Ok(name)
    }

    fn invalid(&self, message: String) -> FormatError {
        FormatError::invalid(self.path, self.record.clone(), message)
    }

    fn finish(&self) -> Result<()> {
        let left = self.bytes.len() - self.position;
        if left != 0 {
            return Err(FormatError::invalid(
                self.path,
                "end of file",
                format!("{left} bytes remain after the last record (wrong record count?)"),
            ));
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| FormatError::io(path, e))
}

pub fn read_cameras_bin(path: &Path) -> Result<BTreeMap<u32, ColmapCamera>> {
    parse_cameras(path, &read_file(path)?)
}

pub fn read_images_bin(path: &Path) -> Result<BTreeMap<u32, ColmapImage>> {
    parse_images(path, &read_file(path)?)
}

pub fn read_points3d_bin(path: &Path) -> Result<BTreeMap<u64, Point3D>> {
    parse_points3d(path, &read_file(path)?)
}

/// Parses the bytes of a `cameras.bin`; `path` is used in error messages only.
pub fn parse_cameras(path: &Path, bytes: &[u8]) -> Result<BTreeMap<u32, ColmapCamera>> {
    let mut r = Reader::new(path, bytes);
    let count = r.count("camera count", 24)?;
    let mut cameras = BTreeMap::new();
    for index in 0..count {
        r.record = format!("camera record {index}");
        let id = r.id32("camera id")?;
        r.record = format!("camera {id}");
        let model_id = r.i32("model id")?;
        let model = CameraModel::from_id(model_id).ok_or_else(|| {
            r.invalid(format!(
                "unknown camera model id {model_id}; COLMAP defines 0..={}",
                CameraModel::ALL.len() - 1
            ))
        })?;
        let width = r.u64("width")?;
        let height = r.u64("height")?;
        let params = (0..model.num_params())
            .map(|_| r.f64("parameter"))
            .collect::<Result<Vec<_>>>()?;
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
    r.finish()?;
    Ok(cameras)
}

/// Parses the bytes of an `images.bin`; `path` is used in error messages only.
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<BTreeMap<u32, ColmapImage>> {
    let mut r = Reader::new(path, bytes);
    let count = r.count("image count", 4 + 8 * 7 + 4 + 1 + 8)?;
    let mut images = BTreeMap::new();
    for index in 0..count {
        r.record = format!("image record {index}");
        let id = r.id32("image id")?;
        r.record = format!("image {id}");
        let mut qvec = [0.0; 4];
        for q in &mut qvec {
            *q = r.f64("qvec")?;
        }
        let mut tvec = [0.0; 3];
        for t in &mut tvec {
            *t = r.f64("tvec")?;
        }
        let camera_id = r.id32("camera id")?;
        let name = r.name()?;
        r.record = format!("image {id} {name:?}");
        let num_points = r.count("keypoint count", 24)?;
        let mut points2d = Vec::with_capacity(num_points);
        for _ in 0..num_points {
            let x = r.f64("keypoint x")?;
            let y = r.f64("keypoint y")?;
            let point3d = r.i64("keypoint 3D point id")?;
            let point3d_id = point3d_reference(point3d).map_err(|message| r.invalid(message))?;
            points2d.push(Point2D { xy: [x, y], point3d_id });
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
    r.finish()?;
    Ok(images)
}

/// Parses the bytes of a `points3D.bin`; `path` is used in error messages only.
pub fn parse_points3d(path: &Path, bytes: &[u8]) -> Result<BTreeMap<u64, Point3D>> {
    let mut r = Reader::new(path, bytes);
    let count = r.count("point count", 8 + 24 + 3 + 8 + 8)?;
    let mut points = BTreeMap::new();
    for index in 0..count {
        r.record = format!("point record {index}");
        let id = r.u64("point id")?;
        r.record = format!("point {id}");
        let mut xyz = [0.0; 3];
        for v in &mut xyz {
            *v = r.f64("xyz")?;
        }
        let rgb = [r.u8("rgb")?, r.u8("rgb")?, r.u8("rgb")?];
        let error = r.f64("error")?;
        let track_length = r.count("track length", 8)?;
        let mut track = Vec::with_capacity(track_length);
        for _ in 0..track_length {
            let image_id = r.id32("track image id")?;
            let point2d_index = r.id32("track keypoint index")?;
            track.push(TrackElement {
                image_id,
                point2d_index,
            });
        }
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
    r.finish()?;
    Ok(points)
}

pub fn write_cameras_bin(path: &Path, cameras: &BTreeMap<u32, ColmapCamera>) -> Result<()> {
    let mut out = Vec::new();
    out.extend((cameras.len() as u64).to_le_bytes());
    for camera in cameras.values() {
        if camera.params.len() != camera.model.num_params() {
            return Err(wrong_param_count(path, camera));
        }
        check_camera(path, camera)?;
        out.extend((camera.id as i32).to_le_bytes());
        out.extend(camera.model.id().to_le_bytes());
        out.extend(camera.width.to_le_bytes());
        out.extend(camera.height.to_le_bytes());
        camera.params.iter().for_each(|p| out.extend(p.to_le_bytes()));
    }
    write_atomic(path, &out)
}

pub(super) fn wrong_param_count(path: &Path, camera: &ColmapCamera) -> FormatError {
    FormatError::invalid(
        path,
        format!("camera {}", camera.id),
        format!(
            "{} needs {} parameters, got {}",
            camera.model.name(),
            camera.model.num_params(),
            camera.params.len()
        ),
    )
}

pub fn write_images_bin(path: &Path, images: &BTreeMap<u32, ColmapImage>) -> Result<()> {
    let mut out = Vec::new();
    out.extend((images.len() as u64).to_le_bytes());
    for image in images.values() {
        check_image(path, image)?;
        out.extend((image.id as i32).to_le_bytes());
        image
            .qvec
            .iter()
            .chain(&image.tvec)
            .for_each(|v| out.extend(v.to_le_bytes()));
        out.extend((image.camera_id as i32).to_le_bytes());
        out.extend(image.name.as_bytes());
        out.push(0);
        out.extend((image.points2d.len() as u64).to_le_bytes());
        for point in &image.points2d {
            out.extend(point.xy[0].to_le_bytes());
            out.extend(point.xy[1].to_le_bytes());
            out.extend(point.point3d_id.map_or(-1, |id| id as i64).to_le_bytes());
        }
    }
    write_atomic(path, &out)
}

pub fn write_points3d_bin(path: &Path, points: &BTreeMap<u64, Point3D>) -> Result<()> {
    let mut out = Vec::new();
    out.extend((points.len() as u64).to_le_bytes());
    for point in points.values() {
        check_point(path, point)?;
        out.extend(point.id.to_le_bytes());
        point.xyz.iter().for_each(|v| out.extend(v.to_le_bytes()));
        out.extend(point.rgb);
        out.extend(point.error.to_le_bytes());
        out.extend((point.track.len() as u64).to_le_bytes());
        for element in &point.track {
            out.extend((element.image_id as i32).to_le_bytes());
            out.extend((element.point2d_index as i32).to_le_bytes());
        }
    }
    write_atomic(path, &out)
}
