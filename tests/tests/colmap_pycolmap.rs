//! lrf-formats' COLMAP reader and writer against pycolmap (COLMAP's own code) on the real scenes:
//! what we read equals what pycolmap reads; what we write (binary and text) pycolmap reads back
//! unchanged; and our own text and binary round trips are exact.

use std::path::{Path, PathBuf};

use lrf_formats::colmap::{ColmapModel, ModelFormat};
use lrf_tests::{data_dir, pycolmap_dump};
use serde_json::Value;

/// Largest difference tolerated between a float we read and pycolmap's (the files are the same
/// bytes, so in practice they are identical; pycolmap may renormalise quaternions).
const TOLERANCE: f64 = 1e-9;

fn model_dir(scene: &str) -> PathBuf {
    let dir = data_dir().join("real").join(scene).join("sparse/0");
    assert!(dir.is_dir(), "real scene model {} is missing", dir.display());
    dir
}

fn read_ours(dir: &Path) -> ColmapModel {
    ColmapModel::read(dir).unwrap_or_else(|e| panic!("lrf-formats cannot read {}: {e}", dir.display()))
}

fn f64s(value: &Value, what: &str) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array, got {value}"))
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{what}: expected a number, got {v}"))
        })
        .collect()
}

fn u64_of(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: expected an unsigned integer, got {value}"))
}

fn i64_of(value: &Value, what: &str) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: expected an integer, got {value}"))
}

fn array<'a>(value: &'a Value, key: &str) -> &'a Vec<Value> {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("pycolmap dump: {key:?} is not an array"))
}

/// Collects differences, so a failure lists the first several rather than only one.
#[derive(Default)]
struct Diffs(Vec<String>);

impl Diffs {
    fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(message());
        }
    }

    fn floats(&mut self, what: impl Fn() -> String, ours: &[f64], theirs: &[f64]) {
        if ours.len() != theirs.len() {
            self.0.push(format!(
                "{}: {} values here, {} in pycolmap",
                what(),
                ours.len(),
                theirs.len()
            ));
            return;
        }
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            let close = (a - b).abs() <= TOLERANCE; // false for NaN
            if !close {
                self.0.push(format!(
                    "{}[{i}]: {a:?} here, {b:?} in pycolmap (differ by {:e})",
                    what(),
                    (a - b).abs()
                ));
            }
        }
    }

    fn finish(self, label: &str) {
        if !self.0.is_empty() {
            let shown: Vec<_> = self.0.iter().take(25).cloned().collect();
            panic!(
                "{label}: {} differences from pycolmap, first ones:\n  {}",
                self.0.len(),
                shown.join("\n  ")
            );
        }
    }
}

/// Compares a model with pycolmap's dump of (possibly another copy of) it: counts, ids, every
/// camera, pose (quaternion up to sign), keypoint and 3D point.
fn compare_with_pycolmap(label: &str, ours: &ColmapModel, dump: &Value) {
    let mut d = Diffs::default();

    let cameras = array(dump, "cameras");
    d.check(cameras.len() == ours.cameras.len(), || {
        format!("{} cameras here, {} in pycolmap", ours.cameras.len(), cameras.len())
    });
    for camera in cameras {
        let id = u64_of(&camera["id"], "camera id");
        let Some(mine) = u32::try_from(id).ok().and_then(|id| ours.cameras.get(&id)) else {
            d.0.push(format!("camera {id} is in pycolmap's model but not here"));
            continue;
        };
        d.check(camera["model"].as_str() == Some(mine.model.name()), || {
            format!(
                "camera {id}: model {} here, {} in pycolmap",
                mine.model.name(),
                camera["model"]
            )
        });
        d.check(
            u64_of(&camera["width"], "width") == mine.width && u64_of(&camera["height"], "height") == mine.height,
            || {
                format!(
                    "camera {id}: size {}x{} here, {}x{} in pycolmap",
                    mine.width, mine.height, camera["width"], camera["height"]
                )
            },
        );
        d.floats(
            || format!("camera {id} params"),
            &mine.params,
            &f64s(&camera["params"], "params"),
        );
    }

    let images = array(dump, "images");
    d.check(images.len() == ours.images.len(), || {
        format!("{} images here, {} in pycolmap", ours.images.len(), images.len())
    });
    for image in images {
        let id = u64_of(&image["id"], "image id");
        let Some(mine) = u32::try_from(id).ok().and_then(|id| ours.images.get(&id)) else {
            d.0.push(format!("image {id} is in pycolmap's model but not here"));
            continue;
        };
        d.check(image["name"].as_str() == Some(mine.name.as_str()), || {
            format!("image {id}: name {:?} here, {} in pycolmap", mine.name, image["name"])
        });
        d.check(
            u64_of(&image["camera_id"], "camera id") == u64::from(mine.camera_id),
            || {
                format!(
                    "image {id}: camera {} here, {} in pycolmap",
                    mine.camera_id, image["camera_id"]
                )
            },
        );
        let mut qvec = f64s(&image["qvec"], "qvec");
        let dot: f64 = qvec.iter().zip(&mine.qvec).map(|(a, b)| a * b).sum();
        if dot < 0.0 {
            qvec.iter_mut().for_each(|q| *q = -*q);
        }
        d.floats(|| format!("image {id} qvec (up to sign)"), &mine.qvec, &qvec);
        d.floats(|| format!("image {id} tvec"), &mine.tvec, &f64s(&image["tvec"], "tvec"));
        let points = image["points2d"].as_array().expect("points2d is an array");
        d.check(points.len() == mine.points2d.len(), || {
            format!(
                "image {id}: {} keypoints here, {} in pycolmap",
                mine.points2d.len(),
                points.len()
            )
        });
        for (index, (point, mine)) in points.iter().zip(&mine.points2d).enumerate() {
            let values = point.as_array().expect("a keypoint is [x, y, point3d_id]");
            let xy = [values[0].as_f64().expect("x"), values[1].as_f64().expect("y")];
            d.floats(|| format!("image {id} keypoint {index} xy"), &mine.xy, &xy);
            let theirs = i64_of(&values[2], "point3d id");
            let here = mine.point3d_id.map_or(-1, |p| p as i64);
            d.check(theirs == here, || {
                format!("image {id} keypoint {index}: 3D point {here} here, {theirs} in pycolmap")
            });
        }
    }

    let points = array(dump, "points3d");
    d.check(points.len() == ours.points.len(), || {
        format!("{} 3D points here, {} in pycolmap", ours.points.len(), points.len())
    });
    for point in points {
        let id = u64_of(&point["id"], "point id");
        let Some(mine) = ours.points.get(&id) else {
            d.0.push(format!("point {id} is in pycolmap's model but not here"));
            continue;
        };
        d.floats(|| format!("point {id} xyz"), &mine.xyz, &f64s(&point["xyz"], "xyz"));
        let rgb: Vec<u64> = point["rgb"]
            .as_array()
            .expect("rgb")
            .iter()
            .map(|c| u64_of(c, "rgb"))
            .collect();
        d.check(rgb == mine.rgb.map(u64::from), || {
            format!("point {id}: colour {:?} here, {rgb:?} in pycolmap", mine.rgb)
        });
        d.floats(
            || format!("point {id} error"),
            &[mine.error],
            &[point["error"].as_f64().expect("error")],
        );
        let track: Vec<(u64, u64)> = point["track"]
            .as_array()
            .expect("track")
            .iter()
            .map(|e| (u64_of(&e[0], "track image id"), u64_of(&e[1], "track keypoint index")))
            .collect();
        let here: Vec<(u64, u64)> = mine
            .track
            .iter()
            .map(|e| (u64::from(e.image_id), u64::from(e.point2d_index)))
            .collect();
        d.check(track == here, || {
            format!("point {id}: track {here:?} here, {track:?} in pycolmap")
        });
    }

    d.finish(label);
}

/// Our reader and pycolmap agree on the original files.
fn check_read(scene: &str) {
    let dir = model_dir(scene);
    let ours = read_ours(&dir);
    assert!(
        !ours.cameras.is_empty() && !ours.images.is_empty() && !ours.points.is_empty(),
        "{scene}: empty model"
    );
    compare_with_pycolmap(
        &format!("{scene}: reading {}", dir.display()),
        &ours,
        &pycolmap_dump(&dir),
    );
}

/// What our writer produces in `format`, pycolmap reads as the model we wrote.
fn check_written(scene: &str, format: ModelFormat) {
    let ours = read_ours(&model_dir(scene));
    let out = tempfile::tempdir().expect("temporary folder");
    ours.write(out.path(), format)
        .unwrap_or_else(|e| panic!("{scene}: writing {format:?}: {e}"));
    compare_with_pycolmap(
        &format!("{scene}: pycolmap reading our {format:?} model"),
        &ours,
        &pycolmap_dump(out.path()),
    );
}

/// Our writer then our reader gives back exactly the model we started from, in both formats.
fn check_round_trip(scene: &str) {
    let ours = read_ours(&model_dir(scene));
    for format in [ModelFormat::Text, ModelFormat::Binary] {
        let out = tempfile::tempdir().expect("temporary folder");
        ours.write(out.path(), format)
            .unwrap_or_else(|e| panic!("{scene}: writing {format:?}: {e}"));
        let back = ColmapModel::read_format(out.path(), format)
            .unwrap_or_else(|e| panic!("{scene}: reading our {format:?}: {e}"));
        // Exact equality, floats included: the text writer uses shortest round-trip formatting.
        assert!(
            back == ours,
            "{scene}: our {format:?} writer then reader changed the model"
        );
        // And `read` picks the format from the files present.
        assert!(
            ColmapModel::read(out.path()).expect("read") == ours,
            "{scene}: ColmapModel::read of our {format:?} model differs"
        );
    }
}

#[test]
fn llff_fern_reads_as_pycolmap_does() {
    check_read("llff_fern");
}

#[test]
fn carved_bird_reads_as_pycolmap_does() {
    check_read("carved_bird");
}

#[test]
fn llff_fern_binary_written_reads_back_in_pycolmap() {
    check_written("llff_fern", ModelFormat::Binary);
}

#[test]
fn carved_bird_binary_written_reads_back_in_pycolmap() {
    check_written("carved_bird", ModelFormat::Binary);
}

#[test]
fn llff_fern_text_written_reads_back_in_pycolmap() {
    check_written("llff_fern", ModelFormat::Text);
}

#[test]
fn carved_bird_text_written_reads_back_in_pycolmap() {
    check_written("carved_bird", ModelFormat::Text);
}

#[test]
fn llff_fern_text_and_binary_round_trip_exactly() {
    check_round_trip("llff_fern");
}

#[test]
fn carved_bird_text_and_binary_round_trip_exactly() {
    check_round_trip("carved_bird");
}
