//! The plugin binary runs a pipeline that mixes built-in stages and its own.

use std::process::Command;

#[test]
fn a_pipeline_mixes_built_in_and_plugin_stages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "pipeline: plugin\nwork_dir: work\nscenes:\n  - generate: synth\n    params: {scenes: 2, views: 4, size: 64x48, seed: 1, points: 100}\n    role: eval\n\
         stages:\n  - {id: ingest, kind: colmap-ingest, inputs: {scene: scenes}}\n  \
         - {id: stats, kind: image-stats, inputs: {views: ingest}, params: {dark_below: 0.05}}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_custom-flow"))
        .args(["p.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    let mut found = 0;
    for entry in std::fs::read_dir(dir.path().join("work/store")).unwrap() {
        let stats = entry.unwrap().path().join("stats/stats.json");
        if let Ok(bytes) = std::fs::read(&stats) {
            let views: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(views.as_array().map(Vec::len), Some(4), "{views}");
            let mean = views[0]["mean_rgb"][0].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&mean) && mean > 0.0, "{views}");
            found += 1;
        }
    }
    assert_eq!(found, 2, "one stats artifact per scene: {text}");
    // The plugin's parameters are checked like built-in ones.
    let bad = std::fs::read_to_string(dir.path().join("p.yaml"))
        .unwrap()
        .replace("0.05", "2");
    std::fs::write(dir.path().join("p.yaml"), bad).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_custom-flow"))
        .args(["plan", "p.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("dark_below = 2 is outside 0..=1"));
}
