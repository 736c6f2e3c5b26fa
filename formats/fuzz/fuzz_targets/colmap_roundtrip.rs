//! Each binary parser on the same bytes; whatever parses is written with our writer, read back and
//! compared: same records (NaN keypoints and errors compared through their Debug text), and the
//! written file is the same length as the input (the encoding is canonical up to record order) and
//! a fixed point of read-then-write.
#![no_main]

mod common;

use std::fmt::Debug;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lrf_formats::Result;
use lrf_formats::colmap::{
    parse_cameras, parse_images, parse_points3d, write_cameras_bin, write_images_bin, write_points3d_bin,
};

fn round_trip<T: Debug>(
    file: &str,
    data: &[u8],
    parse: fn(&Path, &[u8]) -> Result<T>,
    write: fn(&Path, &T) -> Result<()>,
) {
    let input = Path::new("fuzz/input").join(file);
    let Ok(first) = parse(&input, data) else { return };
    let path = common::scratch_file(file);
    write(&path, &first).unwrap_or_else(|e| panic!("writing what {file} parsed failed: {e}"));
    let written = std::fs::read(&path).expect("read back");
    assert_eq!(
        written.len(),
        data.len(),
        "{file}: written file differs in length from the parsed input"
    );
    let second = parse(&path, &written).unwrap_or_else(|e| panic!("our own {file} does not parse: {e}"));
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "{file}: model changed in write-then-read"
    );
    write(&path, &second).expect("second write");
    assert_eq!(
        std::fs::read(&path).expect("read back"),
        written,
        "{file}: writing is not idempotent"
    );
}

fuzz_target!(|data: &[u8]| {
    round_trip("cameras.bin", data, parse_cameras, write_cameras_bin);
    round_trip("images.bin", data, parse_images, write_images_bin);
    round_trip("points3D.bin", data, parse_points3d, write_points3d_bin);
});
