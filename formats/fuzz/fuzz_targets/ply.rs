//! The 3DGS PLY reader on arbitrary bytes: never panics (nor allocates what the header merely claims);
//! errors name the file; a field it accepts is valid and survives our writer then reader unchanged.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lrf_formats::ply::{read_ply, write_ply};

fuzz_target!(|data: &[u8]| {
    let file = "field.ply";
    let path = common::scratch_file(file);
    std::fs::write(&path, data).expect("write input");
    let first = match read_ply(&path) {
        Ok(first) => first,
        Err(err) => return common::check_error(&err, file),
    };
    first.validate().expect("a field the reader accepts is valid");
    let output = common::scratch_file("out-field.ply");
    write_ply(&output, &first).unwrap_or_else(|e| panic!("writing what the reader accepted failed: {e}"));
    let second = read_ply(&output).unwrap_or_else(|e| panic!("our own PLY does not read: {e}"));
    // Compared bit for bit: NaN payloads must survive too.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&first.means), bits(&second.means));
    assert_eq!(bits(&first.colors), bits(&second.colors));
    assert_eq!((first.sh_coeffs, first.channels), (second.sh_coeffs, second.channels));
});
