//! `parse_cameras` on arbitrary bytes: never panics; errors name the file and record; what it accepts
//! satisfies the reader's promises.
#![no_main]

mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lrf_formats::colmap::parse_cameras;

fuzz_target!(|data: &[u8]| {
    match parse_cameras(Path::new("fuzz/sparse/0/cameras.bin"), data) {
        Ok(parsed) => common::check_cameras(&parsed),
        Err(err) => common::check_error(&err, "cameras.bin"),
    }
});
