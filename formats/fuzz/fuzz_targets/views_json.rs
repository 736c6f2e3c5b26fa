//! `views.json` on arbitrary bytes: never panics; errors name the file; a view set it accepts has views
//! and survives our writer then reader unchanged.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lrf_formats::views::ViewSet;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch_file("views");
    std::fs::create_dir_all(&dir).expect("views folder");
    std::fs::write(dir.join("views.json"), data).expect("write input");
    let first = match ViewSet::read(&dir) {
        Ok(first) => first,
        Err(err) => return common::check_error(&err, "views.json"),
    };
    assert!(!first.views.is_empty());
    let out = common::scratch_file("views-out");
    std::fs::create_dir_all(&out).expect("output folder");
    first.write(&out).unwrap_or_else(|e| panic!("writing what the reader accepted failed: {e}"));
    let second = ViewSet::read(&out).unwrap_or_else(|e| panic!("our own views.json does not read: {e}"));
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
});
