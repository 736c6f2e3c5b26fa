//! Checks shared by the fuzz targets: what every error and every accepted model must satisfy.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lrf_formats::FormatError;
use lrf_formats::colmap::{ColmapCamera, ColmapImage, Point3D};

/// Errors name the file, and invalid-content errors a record and a reason.
pub fn check_error(err: &FormatError, file: &str) {
    let text = err.to_string();
    assert!(text.contains(file), "error does not name {file}: {text}");
    if let FormatError::Invalid { record, message, .. } = err {
        assert!(
            !record.is_empty() && !message.is_empty(),
            "error without record or message: {text}"
        );
    }
}

/// What the readers promise about cameras they accept.
pub fn check_cameras(cameras: &BTreeMap<u32, ColmapCamera>) {
    for (&id, camera) in cameras {
        assert_eq!(id, camera.id);
        assert!(id <= i32::MAX as u32);
        assert_eq!(camera.params.len(), camera.model.num_params());
        assert!(camera.params.iter().all(|p| p.is_finite()));
        assert!(
            camera.width > 0
                && camera.height > 0
                && camera.width <= u32::MAX as u64
                && camera.height <= u32::MAX as u64
        );
        if let Some((fx, fy, _, _)) = camera.intrinsics() {
            assert!(fx > 0.0 && fy > 0.0);
        }
        let _ = camera.distortion_params();
    }
}

pub fn check_images(images: &BTreeMap<u32, ColmapImage>) {
    for (&id, image) in images {
        assert_eq!(id, image.id);
        assert!(image.qvec.iter().chain(&image.tvec).all(|v| v.is_finite()));
        assert!(image.qvec.iter().any(|&q| q != 0.0));
        assert!(!image.name.is_empty() && !image.name.contains('\0'));
        assert!(image.id <= i32::MAX as u32 && image.camera_id <= i32::MAX as u32);
        assert!(
            image
                .points2d
                .iter()
                .all(|p| p.point3d_id.is_none_or(|id| id <= i64::MAX as u64))
        );
    }
}

pub fn check_points(points: &BTreeMap<u64, Point3D>) {
    for (&id, point) in points {
        assert_eq!(id, point.id);
        assert!(point.xyz.iter().all(|v| v.is_finite()));
        assert!(point.track.iter().all(|e| e.image_id <= i32::MAX as u32 && e.point2d_index <= i32::MAX as u32));
    }
}

/// A scratch folder for the targets that go through files: on tmpfs where there is one, since
/// the writers fsync.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        dir.expect("scratch folder for fuzzing")
    })
    .path()
}

pub fn scratch_file(name: &str) -> PathBuf {
    scratch_dir().join(name)
}
