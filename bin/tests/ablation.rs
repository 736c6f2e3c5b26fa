//! The ablation chain through the CLI at toy scale: correspondences, Stage I, Stage II with both encoders,
//! Stage III for both, per-scene RGB alignment for both, the six evaluation rows on a scene the training never
//! saw, the latent consistency before and after Stage I, and the summary. Checks wiring and artifacts, not quality (the
//! schedules are a few steps).

use std::path::{Path, PathBuf};
use std::process::Command;

use lrf_formats::shard::ShardReader;

mod common;
use common::artifacts;

const BIN: &str = env!("CARGO_BIN_EXE_lrf-flow");

fn pipeline() -> String {
    let ablation = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/ablation.yaml"))
        .expect("pipelines/ablation.yaml");
    // The shipped pipeline, on three small generated scenes (two for training, one for evaluation) with
    // toy schedules; Stage I's L_AE gets LPIPS and a PatchGAN that starts at its second step.
    let stages = &ablation[ablation.find("stages:").expect("stages")..];
    let stage1 = "{steps: 300, views_per_step: 2, reconstruction_window: 16}";
    assert!(
        stages.contains(stage1),
        "Stage I's parameters changed: update this test"
    );
    // Stage III anchors on the shipped corpus's real scenes; here, on one of the generated ones.
    let real = "[beer_can, computer_mouse, desk_laptop, snowmiku_plush]";
    assert!(
        stages.contains(real),
        "Stage III's anchor scenes changed: update this test"
    );
    let stages = stages
        .replace(real, "[scene001]")
        .replace(
            stage1,
            "{steps: 300, views_per_step: 2, reconstruction_window: 16, gan: {start_step: 2}, \
             perceptual: {weights: lpips/lpips_alex.safetensors, backbone: alex}}",
        )
        .replace("steps: 300", "steps: 3, log_every: 1")
        .replace("train: {iterations: 300}", "train: {iterations: 3}")
        .replace(
        "{iterations: 2000, densify_until: 1000, opacity_reset_interval: 3000, sh_degree: 1, sh_degree_interval: 1000}",
        "{iterations: 20, densify_from: 5, densify_until: 15, densify_interval: 5, sh_degree: 0}",
    );
    format!(
        "pipeline: ablation-test\nwork_dir: work\nworkers: 2\nscenes:\n  - generate: synth\n    params: {{scenes: 2, \
         views: 8, size: 128x96, seed: 5, points: 300}}\n    role: train\n  - {{glob: held-out/*, role: eval}}\n{stages}"
    )
}

#[test]
fn the_ablation_pipeline_runs_and_each_stage_trains_only_its_half() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = pipeline();
    assert!(
        text.contains("steps: 3") && text.contains("iterations: 20") && text.contains("train: {iterations: 3}"),
        "{text}"
    );
    std::fs::write(dir.path().join("p.yaml"), text).expect("pipeline");
    // Random-backbone LPIPS weights from the `lpips` package (nothing downloaded).
    let lpips_dir = dir.path().join("lpips");
    std::fs::create_dir(&lpips_dir).expect("folder");
    let python = std::env::var("LRF_PYTHON").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.venv/bin/python")
            .display()
            .to_string()
    });
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vae/tests/fixtures/lpips_reference.py");
    let lpips = Command::new(&python)
        .arg(fixture)
        .arg(&lpips_dir)
        .output()
        .expect("python");
    assert!(lpips.status.success(), "{}", String::from_utf8_lossy(&lpips.stderr));
    // The evaluation scene: generated apart (another seed) and renamed, as scene names must be unique.
    let synth = Command::new(BIN)
        .args([
            "synth", "--out", "eval", "--scenes", "1", "--views", "8", "--size", "128x96", "--seed", "6",
        ])
        .args(["--points", "300"])
        .current_dir(dir.path())
        .output()
        .expect("synth");
    assert!(synth.status.success(), "{}", String::from_utf8_lossy(&synth.stderr));
    std::fs::create_dir(dir.path().join("held-out")).expect("folder");
    std::fs::rename(dir.path().join("eval/scene000"), dir.path().join("held-out/bird")).expect("rename");
    let output = Command::new(BIN)
        .args(["run", "p.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{log}");

    let report = artifacts(dir.path(), "report");
    let summary = std::fs::read_to_string(report[0].join("summary.md")).expect("summary");
    for row in [
        "original",
        "plus-stage1",
        "plus-stage3",
        "plus-both",
        "plus-rgb-align",
        "plus-both-rgb-align",
    ] {
        assert!(
            summary.contains(&format!("| {row} | bird |")),
            "{row} missing:\n{summary}"
        );
    }
    assert_eq!(artifacts(dir.path(), "evaluation").len(), 6, "{log}");
    assert_eq!(artifacts(dir.path(), "consistency").len(), 2, "{log}");

    // Three fine-tuned models: Stage I changes the encoder only, Stage III the decoder only; and the evaluation
    // scene's two per-scene alignments (they write alignment.json, not training.json).
    let (models, aligned): (Vec<PathBuf>, Vec<PathBuf>) = artifacts(dir.path(), "autoencoder")
        .into_iter()
        .partition(|m| m.join("training.json").is_file());
    assert_eq!((models.len(), aligned.len()), (3, 2), "{models:?} {aligned:?}");
    let weights = |file: &Path| {
        let shard = ShardReader::open(file).expect("model file");
        let mut names: Vec<String> = shard.names().map(str::to_owned).collect();
        names.sort();
        // The bundled weights are f16, saved models f32: compare as f32.
        let values = |n: &str| {
            let t = shard
                .tensor(n)
                .expect("tensor")
                .to_kind(tch::Kind::Float)
                .flatten(0, -1);
            Vec::<f32>::try_from(t).expect("f32 values")
        };
        names.iter().map(|n| (n.clone(), values(n))).collect::<Vec<_>>()
    };
    let half = |model: &Path, half: &str| weights(&model.join(format!("taesd_{half}.safetensors")));
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/taef2");
    let (original_encoder, original_decoder) = (
        weights(&bundled.join("taef2_encoder.safetensors")),
        weights(&bundled.join("taef2_decoder.safetensors")),
    );
    let is_stage1 = |m: &PathBuf| {
        std::fs::read_to_string(m.join("training.json"))
            .expect("training.json")
            .contains("\"first_step\"")
    };
    let (stage1, stage3): (Vec<&PathBuf>, Vec<&PathBuf>) = models.iter().partition(|m| is_stage1(m));
    assert_eq!((stage1.len(), stage3.len()), (1, 2));
    // L_AE's extra terms: LPIPS from the first step, the GAN from its start step on.
    let training: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stage1[0].join("training.json")).expect("training.json"))
            .expect("json");
    let curve = training["curve"].as_array().expect("curve");
    assert_eq!(curve.len(), 3, "{training}");
    let term = |step: usize, name: &str| curve[step][1][name].as_f64().expect("term");
    assert!((0..3).all(|s| term(s, "perceptual") > 0.0), "{training}");
    assert_eq!(
        (term(0, "adversarial"), term(0, "discriminator")),
        (0.0, 0.0),
        "{training}"
    );
    assert!(
        (1..3).all(|s| term(s, "adversarial") != 0.0 && term(s, "discriminator") > 0.0),
        "{training}"
    );
    let stage1_encoder = half(stage1[0], "encoder");
    assert_ne!(stage1_encoder, original_encoder, "Stage I left the encoder unchanged");
    assert_eq!(
        half(stage1[0], "decoder"),
        original_decoder,
        "Stage I changed the decoder"
    );
    // Which model a decoder-tuning run started from: it changed the decoder and kept that model's encoder.
    let start = |model: &PathBuf, what: &str| -> &'static str {
        assert_ne!(
            half(model, "decoder"),
            original_decoder,
            "{what} left the decoder unchanged"
        );
        let encoder = half(model, "encoder");
        if encoder == stage1_encoder {
            "stage1"
        } else {
            assert_eq!(encoder, original_encoder, "{what} changed the encoder");
            "original"
        }
    };
    // Stage III: one run started from the original model, the other from Stage I's.
    let mut starts: Vec<&str> = stage3.iter().map(|m| start(m, "Stage III")).collect();
    starts.sort();
    assert_eq!(starts, ["original", "stage1"]);
    // Per-scene alignment: from the original model and from Stage I + III.
    let mut starts: Vec<&str> = aligned
        .iter()
        .map(|m| {
            assert!(m.join("alignment.json").is_file(), "{}", m.display());
            start(m, "rgb-align")
        })
        .collect();
    starts.sort();
    assert_eq!(starts, ["original", "stage1"]);
}
