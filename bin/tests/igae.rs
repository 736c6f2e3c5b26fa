//! The IG-AE comparison (`pipelines/igae.yaml`) through the CLI at toy scale: IG-AE training, Stages I and
//! III, latent Gaussians and latent Tri-Plane NeRFs for each autoencoder, RGB alignment of the Tri-Planes,
//! the eight evaluation rows on a held-out generated object, and the report. Checks wiring and artifacts,
//! not quality (the schedules are a few steps).

use std::path::Path;

mod common;
use common::{artifacts, run_pipeline};

/// The shipped pipeline's stages with toy schedules, on two generated training objects and one held-out
/// object (the shipped scene sources are replaced).
fn pipeline() -> String {
    let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/igae.yaml"))
        .expect("pipelines/igae.yaml");
    let stages = &shipped[shipped.find("stages:").expect("stages")..];
    let small_field = "features: 8, resolution: 16, hidden: 16, sampling: {stratified: 8, importance: 4}";
    let replacements = [
        (
            "    kind: igae-train\n    inputs: {views: ingest}\n    roles: [train]\n".to_string(),
            format!(
                "    kind: igae-train\n    inputs: {{views: ingest}}\n    roles: [train]\n    params: {{{small_field}, \
                 pretrain_steps: 3, steps: 3, batch: 2, window: 8, perceptual: none, preservation_perceptual: 0}}\n"
            ),
        ),
        (
            "    kind: encoder-finetune\n    inputs: {views: ingest, correspondences: correspondences}\n    roles: [train]\n"
                .to_string(),
            "    kind: encoder-finetune\n    inputs: {views: ingest, correspondences: correspondences}\n    roles: [train]\n    \
             params: {steps: 2}\n"
                .to_string(),
        ),
        (
            "    inputs: {pairs: pairs, autoencoder: stage1}\n    roles: [train]\n    params: {autoencoder: input}\n"
                .to_string(),
            "    inputs: {pairs: pairs, autoencoder: stage1}\n    roles: [train]\n    params: {autoencoder: input, steps: 2}\n"
                .to_string(),
        ),
        (
            "{iterations: 2000, densify_until: 1000, opacity_reset_interval: 3000, sh_degree: 1, sh_degree_interval: 1000}"
                .to_string(),
            "{iterations: 20, densify_from: 5, densify_until: 15, densify_interval: 5, sh_degree: 0}".to_string(),
        ),
    ];
    let mut stages = stages.to_string();
    for (from, to) in replacements {
        assert!(
            stages.contains(&from),
            "the shipped pipeline changed: update this test ({from:?})"
        );
        stages = stages.replace(&from, &to);
    }
    for autoencoder in ["taef2", "lrf", "igae"] {
        let from = format!(
            "    kind: latent-nerf-fit\n    inputs: {{views: ingest, latents: encode-{autoencoder}}}\n    roles: [eval]\n"
        );
        assert!(
            stages.contains(&from),
            "the shipped pipeline changed: update this test ({from:?})"
        );
        stages = stages.replace(&from, &format!("{from}    params: {{{small_field}, iterations: 5}}\n"));
    }
    let (taef2_align, igae_align) = (
        "    inputs: {field: nerf-taef2, views: ingest, latents: encode-taef2}\n    roles: [eval]\n",
        "    inputs: {field: nerf-igae, views: ingest, latents: encode-igae, autoencoder: igae}\n    roles: [eval]\n    \
         params: {autoencoder: input}\n",
    );
    assert!(stages.contains(taef2_align) && stages.contains(igae_align));
    stages = stages
        .replace(
            taef2_align,
            &format!("{taef2_align}    params: {{train: {{iterations: 2}}}}\n"),
        )
        .replace(
            igae_align,
            &igae_align.replace("{autoencoder: input}", "{autoencoder: input, train: {iterations: 2}}"),
        );
    format!(
        "pipeline: igae-test\nwork_dir: work\nworkers: 2\nscenes:\n  - generate: synth\n    params: {{scenes: 2, \
         views: 8, size: 64x64, seed: 21, points: 300, path: orbit}}\n    role: train\n  - generate: synth\n    \
         params: {{scenes: 1, views: 8, size: 64x64, seed: 22, points: 300, path: orbit, prefix: heldout}}\n    \
         role: eval\n{stages}"
    )
}

#[test]
fn the_igae_comparison_runs_every_cell() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("p.yaml"), pipeline()).expect("pipeline");
    let (output, log) = run_pipeline(dir.path());
    assert!(output.status.success(), "{log}");

    let report = artifacts(dir.path(), "report");
    let summary = std::fs::read_to_string(report[0].join("summary.md")).expect("summary");
    let rows = [
        ("taef2-3dgs", "3D Gaussians"),
        ("lrf-3dgs", "3D Gaussians"),
        ("igae-3dgs", "3D Gaussians"),
        ("taef2-nerf", "Tri-Plane NeRF"),
        ("lrf-nerf", "Tri-Plane NeRF"),
        ("igae-nerf", "Tri-Plane NeRF"),
        ("taef2-nerf-aligned", "Tri-Plane NeRF"),
        ("igae-nerf-aligned", "Tri-Plane NeRF"),
    ];
    for (row, field) in rows {
        let line = summary
            .lines()
            .find(|l| l.starts_with(&format!("| {row} | heldout000 |")))
            .unwrap_or_else(|| panic!("{row} missing:\n{summary}"));
        assert!(line.contains(field), "{row} is not a {field} row: {line}");
    }
    assert_eq!(artifacts(dir.path(), "evaluation").len(), rows.len(), "{log}");
    // IG-AE's model records what its training did to the encoder.
    let models = artifacts(dir.path(), "autoencoder");
    let igae = models
        .iter()
        .filter_map(|m| std::fs::read_to_string(m.join("training.json")).ok())
        .filter(|t| t.contains("consistency_trained"))
        .count();
    assert_eq!(igae, 1, "{models:?}");
}
