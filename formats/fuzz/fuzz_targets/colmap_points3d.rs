//! `parse_points3d` on arbitrary bytes: never panics; errors name the file and record; what it accepts
//! satisfies the reader's promises.
#![no_main]

mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lrf_formats::colmap::parse_points3d;

fuzz_target!(|data: &[u8]| {
    match parse_points3d(Path::new("fuzz/sparse/0/points3D.bin"), data) {
        Ok(parsed) => common::check_points(&parsed),
        Err(err) => common::check_error(&err, "points3D.bin"),
    }
});
