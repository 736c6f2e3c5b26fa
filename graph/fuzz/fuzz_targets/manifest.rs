//! Artifact manifests on arbitrary bytes: reading never panics, and a manifest that reads survives
//! writing and reading back unchanged (what `verify` and `gc --dry-run` rely on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lrf_graph::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(first) = serde_json::from_slice::<Manifest>(data) else { return };
    let text = serde_json::to_string_pretty(&first).expect("a manifest that reads can be written");
    let second: Manifest = serde_json::from_str(&text).expect("our own manifest reads");
    assert_eq!(
        serde_json::to_value(&first).expect("value"),
        serde_json::to_value(&second).expect("value")
    );
});
