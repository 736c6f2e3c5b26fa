//! Stage II end to end through the CLI, on small generated scenes and a short schedule: ingest → encode →
//! latent fit → render → evaluate, the 3DGS/8 baseline beside it, and the summary; then a scene with a
//! corrupt image failing alone.

use std::path::Path;
use std::process::Command;

mod common;
use common::{artifacts, run_pipeline as run};

const BIN: &str = env!("CARGO_BIN_EXE_lrf-flow");

const SCHEDULE: &str =
    "{iterations: 60, densify_from: 10, densify_until: 50, densify_interval: 20, sh_degree: 1, sh_degree_interval: 30}";

fn pipeline(scenes: &str) -> String {
    format!(
        "\
pipeline: stage2
work_dir: work
workers: 2
scenes:
{scenes}
stages:
  - {{id: ingest, kind: colmap-ingest, inputs: {{scene: scenes}}}}
  - {{id: encode, kind: vae-encode, inputs: {{views: ingest}}}}
  - id: fit
    kind: latent-3dgs-fit
    inputs: {{views: ingest, latents: encode}}
    params: {{log_every: 20, train: {SCHEDULE}}}
  - {{id: render, kind: render, inputs: {{field: fit, views: ingest}}}}
  - {{id: evaluate, kind: evaluate, inputs: {{renders: render, views: ingest}}}}
  - id: fit-rgb8
    kind: rgb-3dgs-fit
    inputs: {{views: ingest}}
    params: {{downsampling: 8, log_every: 20, train: {SCHEDULE}}}
  - {{id: render-rgb8, kind: render, inputs: {{field: fit-rgb8, views: ingest}}, params: {{resolution: full}}}}
  - {{id: evaluate-rgb8, kind: evaluate, inputs: {{renders: render-rgb8, views: ingest}}}}
  - {{id: export-rgb8, kind: graphdeco-export, inputs: {{field: fit-rgb8, views: ingest, scene: scenes}}}}
  - id: report
    kind: summary
    inputs: {{3dgs-vae: evaluate, 3dgs-8: evaluate-rgb8}}
    params: {{methods: [3dgs-vae, 3dgs-8]}}
"
    )
}

/// The `computed` column of the run table, per stage.
fn computed(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("stage"))
        .skip(1)
        .map_while(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((fields.first()?.to_string(), fields.get(1)?.parse().ok()?))
        })
        .collect()
}

#[test]
fn stage_two_runs_end_to_end_and_a_rerun_computes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source =
        "  - generate: synth\n    params: {scenes: 2, views: 9, size: 128x96, seed: 3, points: 400}\n    role: eval";
    std::fs::write(dir.path().join("p.yaml"), pipeline(source)).expect("pipeline");
    let (output, text) = run(dir.path());
    assert!(output.status.success(), "{text}");
    let stages = computed(&text);
    assert_eq!(stages.len(), 10, "{text}");
    assert!(stages.iter().all(|(_, n)| *n >= 1), "{text}");

    let reports = artifacts(dir.path(), "report");
    assert_eq!(reports.len(), 1);
    let summary = std::fs::read_to_string(reports[0].join("summary.md")).expect("summary.md");
    for needle in [
        "3dgs-vae | scene000",
        "3dgs-vae | scene001",
        "3dgs-8 | scene000",
        "3dgs-8 | scene001",
    ] {
        assert!(summary.contains(needle), "{needle} missing from\n{summary}");
    }
    let evaluations = artifacts(dir.path(), "evaluation");
    assert_eq!(evaluations.len(), 4);
    for evaluation in &evaluations {
        let metrics: serde_json::Value =
            serde_json::from_slice(&std::fs::read(evaluation.join("metrics.json")).expect("metrics")).expect("json");
        let test = &metrics["summary"][0];
        assert_eq!(test["split"], "test");
        let psnr = test["render"]["psnr"].as_f64().expect("psnr");
        assert!((5.0..60.0).contains(&psnr), "PSNR {psnr} in {evaluation:?}");
        assert_eq!(test["render"]["lpips"], "unavailable");
        let st_lpips = test["render"]["st_lpips"]
            .as_f64()
            .expect("ST-LPIPS ships, so it is a number");
        assert!(
            st_lpips > 0.0 && st_lpips < 1.0,
            "ST-LPIPS {st_lpips} in {evaluation:?}"
        );
        // Test views are 0 and 8 of 9: one side-by-side PNG each.
        assert!(evaluation.join("00000.png").is_file() && evaluation.join("00008.png").is_file());
        if metrics["field"] == "latent" {
            let ceiling = test["reconstruction"]["psnr"].as_f64().expect("reconstruction psnr");
            assert!(ceiling > 15.0, "autoencoder reconstruction PSNR {ceiling}");
        }
    }
    // The HTML report is published at a stable path, with this run's stage timings, and printed.
    let latest = dir.path().join("work/report/latest");
    assert!(text.contains("HTML report: work/report/latest/index.html"), "{text}");
    let index = std::fs::read_to_string(latest.join("index.html")).expect("index.html");
    assert!(index.contains("<svg") && index.contains("3dgs-vae") && index.contains("<img src=\"images/"));
    let run_page = std::fs::read_to_string(latest.join("run.html")).expect("run.html");
    assert!(run_page.contains("fit-rgb8"), "{run_page}");
    // The RGB baseline as a graphdeco model folder, read as graphdeco's code reads one; renders and ground
    // truths as its render.py writes them.
    let python = lrf_tests::python_with(&["numpy", "plyfile"]);
    for model in artifacts(dir.path(), "model") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/graphdeco_reader.py");
        let output = Command::new(&python).arg(script).arg(&model).output().expect("python");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let read: serde_json::Value = serde_json::from_slice(&output.stdout).expect("reader JSON");
        assert_eq!(read["sh_degree"], 1, "{read}");
        assert_eq!(read["iteration"], 60, "{read}");
        assert_eq!(read["cameras"].as_array().map(Vec::len), Some(9), "{read}");
        assert_eq!(read["cameras"][0]["img_name"], "00000", "test views first: {read}");
    }
    for evaluation in &evaluations {
        let iterations =
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(evaluation.join("metrics.json")).unwrap())
                .unwrap()["fit_iterations"]
                .clone();
        let split = evaluation.join(format!("test/ours_{iterations}"));
        for folder in ["renders", "gt"] {
            for file in ["00000.png", "00001.png"] {
                assert!(
                    split.join(folder).join(file).is_file(),
                    "{}/{folder}/{file}",
                    split.display()
                );
            }
        }
    }
    for field in artifacts(dir.path(), "field") {
        let ply = std::fs::read(field.join("point_cloud.ply")).expect("PLY");
        assert!(ply.starts_with(b"ply\nformat binary_little_endian 1.0\n"));
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(field.join("field.json")).expect("field.json")).expect("json");
        // The PLY describes itself: a latent one names its autoencoder and normalisation.
        let header =
            String::from_utf8_lossy(&ply[..ply.windows(10).position(|w| w == b"end_header").unwrap()]).to_string();
        if info["space"]["kind"] == "latent" {
            assert!(
                header.contains(&format!("comment channels {}\n", info["channels"])),
                "{header}"
            );
            assert!(header.contains("comment normalization min "), "{header}");
            assert!(header.contains("comment autoencoder taef2 content "), "{header}");
        } else {
            assert!(header.contains("comment space rgb"), "{header}");
        }
        let curve = info["loss_curve"].as_array().expect("loss curve");
        assert_eq!(curve.len(), 3, "{info}");
    }

    let (output, text) = run(dir.path());
    assert!(output.status.success(), "{text}");
    assert!(
        computed(&text).iter().all(|(_, n)| *n == 0),
        "second run recomputed:\n{text}"
    );
}

#[test]
fn a_scene_with_a_corrupt_image_fails_alone_with_a_message_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new(BIN)
        .args([
            "synth", "--out", "scenes", "--scenes", "2", "--views", "6", "--size", "64x48", "--points", "200",
        ])
        .current_dir(dir.path())
        .output()
        .expect("synth");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let broken = dir.path().join("scenes/scene001/images/00003.png");
    let bytes = std::fs::read(&broken).expect("image");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).expect("truncate");
    std::fs::write(
        dir.path().join("p.yaml"),
        pipeline("  - {glob: scenes/scene*, role: eval}"),
    )
    .expect("pipeline");
    let (output, text) = run(dir.path());
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("scene001") && text.contains("00003.png"), "{text}");
    // The healthy scene went all the way; the broken one stopped at ingest.
    let evaluations = artifacts(dir.path(), "evaluation");
    assert_eq!(evaluations.len(), 2, "{text}");
    assert!(artifacts(dir.path(), "views").len() == 1, "{text}");
}
