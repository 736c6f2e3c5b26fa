//! The text readers on arbitrary bytes (first byte picks the file: cameras, images, points3D):
//! never panic; errors name the file; what they accept satisfies the readers' promises and
//! survives our text writer then reader unchanged.
#![no_main]

mod common;

use std::fmt::Debug;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lrf_formats::Result;
use lrf_formats::colmap::{
    read_cameras_txt, read_images_txt, read_points3d_txt, write_cameras_txt, write_images_txt, write_points3d_txt,
};

fn round_trip<T: Debug>(
    file: &str,
    text: &[u8],
    read: fn(&Path) -> Result<T>,
    write: fn(&Path, &T) -> Result<()>,
    check: fn(&T),
) {
    let input = common::scratch_file(file);
    std::fs::write(&input, text).expect("write input");
    let first = match read(&input) {
        Ok(first) => first,
        Err(err) => return common::check_error(&err, file),
    };
    check(&first);
    let output = common::scratch_file(&format!("out-{file}"));
    write(&output, &first).unwrap_or_else(|e| panic!("writing what {file} parsed failed: {e}"));
    let second = read(&output).unwrap_or_else(|e| panic!("our own {file} does not parse: {e}"));
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "{file}: model changed in write-then-read"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => round_trip(
            "cameras.txt",
            text,
            read_cameras_txt,
            write_cameras_txt,
            common::check_cameras,
        ),
        1 => round_trip(
            "images.txt",
            text,
            read_images_txt,
            write_images_txt,
            common::check_images,
        ),
        _ => round_trip(
            "points3D.txt",
            text,
            read_points3d_txt,
            write_points3d_txt,
            common::check_points,
        ),
    }
});
