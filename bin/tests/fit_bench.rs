//! `lrf-flow bench fit` on a tiny generated scene: one machine-readable line per fit whose phases add up to
//! the total, the latents cached for the next run, and a clear error for a folder that is not a scene.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lrf-flow");

fn lrf_flow(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run lrf-flow")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `key=value` fields of the `fit-bench` line for `space`.
fn summary(stdout: &str, space: &str) -> std::collections::HashMap<String, String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("fit-bench ") && l.contains(&format!("space={space} ")))
        .unwrap_or_else(|| panic!("no fit-bench line for {space}:\n{stdout}"));
    line.split_whitespace()
        .skip(1)
        .map(|field| {
            let (key, value) = field.split_once('=').expect("key=value");
            (key.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn bench_fit_breaks_each_fit_down_and_caches_the_latents() {
    let dir = tempfile::tempdir().expect("temp dir");
    let synth = lrf_flow(
        dir.path(),
        &[
            "synth", "--out", "scenes", "--scenes", "1", "--views", "10", "--size", "128x96",
        ],
    );
    assert!(synth.status.success(), "{}", text(&synth));
    let args = [
        "bench",
        "fit",
        "scenes/scene000",
        "--sh-degree",
        "1",
        "--warmup",
        "3",
        "--iterations",
        "6",
        "--cache",
        "cache",
    ];
    for run in 0..2 {
        let output = lrf_flow(dir.path(), &args);
        let out = text(&output);
        assert!(output.status.success(), "{out}");
        for (space, channels) in [("latent", "32"), ("rgb", "3")] {
            let fields = summary(&String::from_utf8_lossy(&output.stdout), space);
            assert_eq!(fields["channels"], channels, "{out}");
            assert_eq!(fields["iterations"], "6", "{out}");
            let ms = |key: &str| -> f64 { fields[key].parse().unwrap_or_else(|_| panic!("{key}: {out}")) };
            let phases = [
                "projection_ms",
                "forward_ms",
                "loss_ms",
                "backward_ms",
                "hand_off_ms",
                "densification_ms",
                "optimizer_ms",
                "rest_ms",
            ];
            let sum: f64 = phases.iter().map(|k| ms(k)).sum();
            let total = ms("ms_per_iteration");
            assert!(phases.iter().all(|k| ms(k) >= 0.0), "{out}");
            // Each phase was measured: the kernel's passes, the loss and the optimiser take time.
            for key in ["projection_ms", "forward_ms", "loss_ms", "backward_ms", "optimizer_ms"] {
                assert!(ms(key) > 0.0, "{key} was not measured: {out}");
            }
            assert!(
                (sum - total).abs() <= 0.01 + 1e-3 * total,
                "phases sum to {sum}, total {total}: {out}"
            );
            // Bookkeeping outside the named phases stays small.
            assert!(ms("rest_ms") < 0.2 * total, "{out}");
            assert!(fields["gaussians"].parse::<usize>().expect("count") > 0, "{out}");
        }
        // One ingested view set and one set of latents, whichever run: the second reused the first's.
        let store = dir.path().join("cache/store");
        let count = |port: &str| {
            std::fs::read_dir(&store)
                .expect("store")
                .filter(|e| e.as_ref().expect("entry").path().join(port).is_dir())
                .count()
        };
        assert_eq!((count("views"), count("latents")), (1, 1), "run {run}");
    }
}

#[test]
fn bench_fit_names_a_folder_that_is_not_a_scene() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("photos")).expect("folder");
    let output = lrf_flow(dir.path(), &["bench", "fit", "photos", "--cache", "cache"]);
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("photos is not a COLMAP scene folder"), "{out}");
    let output = lrf_flow(dir.path(), &["bench", "fit", "missing", "--cache", "cache"]);
    assert!(
        text(&output).contains("scene folder missing: cannot open it"),
        "{}",
        text(&output)
    );
}
