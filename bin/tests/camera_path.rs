//! Camera paths through the CLI on a small generated scene: a latent field rendered along the training views
//! and around the points, frames decoded; an edited path file with a NaN refused before anything runs; and,
//! where ffmpeg is installed, the MP4s and the report that shows them.

use std::process::Command;

mod common;
use common::{artifacts, run_pipeline as run};

fn pipeline(path_stages: &str, summary_videos: &str) -> String {
    format!(
        "\
pipeline: paths
work_dir: work
workers: 1
scenes:
  - generate: synth
    params: {{scenes: 1, views: 9, size: 128x96, seed: 3, points: 400}}
    role: eval
stages:
  - {{id: ingest, kind: colmap-ingest, inputs: {{scene: scenes}}}}
  - {{id: encode, kind: vae-encode, inputs: {{views: ingest}}}}
  - id: fit
    kind: latent-3dgs-fit
    inputs: {{views: ingest, latents: encode}}
    params: {{train: {{iterations: 40, densify_from: 10, densify_until: 30, densify_interval: 10}}}}
  - {{id: render, kind: render, inputs: {{field: fit, views: ingest}}}}
  - {{id: evaluate, kind: evaluate, inputs: {{renders: render, views: ingest}}, params: {{st_lpips: none}}}}
{path_stages}
  - id: report
    kind: summary
    inputs: {{latent: evaluate{summary_videos}}}
    params: {{methods: [latent]{}}}
",
        if summary_videos.is_empty() {
            ""
        } else {
            ", videos: [along]"
        }
    )
}

#[test]
fn latent_frames_along_the_training_views_and_an_orbit() {
    let dir = tempfile::tempdir().unwrap();
    let stages = concat!(
        "  - {id: along, kind: render-path, inputs: {field: fit, views: ingest}, params: {frames: 9, keyframes: 4, video: false}}\n",
        "  - {id: around, kind: render-path, inputs: {field: fit, views: ingest}, params: {path: orbit, frames: 6, video: false}}",
    );
    std::fs::write(dir.path().join("p.yaml"), pipeline(stages, "")).unwrap();
    let (output, text) = run(dir.path());
    assert!(output.status.success(), "{text}");
    let videos = artifacts(dir.path(), "video");
    assert_eq!(videos.len(), 2, "{text}");
    let mut frame_counts = Vec::new();
    for video in &videos {
        let info: serde_json::Value = serde_json::from_slice(&std::fs::read(video.join("path.json")).unwrap()).unwrap();
        let frames = info["frames"].as_u64().unwrap() as usize;
        frame_counts.push(frames);
        assert_eq!(
            (info["width"].as_u64(), info["height"].as_u64()),
            (Some(128), Some(96)),
            "{info}"
        );
        assert!(info["render_seconds_per_frame"].as_f64().unwrap() > 0.0, "{info}");
        assert!(
            info["decode_seconds_per_frame"].as_f64().unwrap() > 0.0,
            "latent frames are decoded: {info}"
        );
        assert_eq!(info["videos"].as_array().map(Vec::len), Some(0), "video: false");
        let pngs = std::fs::read_dir(video.join("frames")).unwrap().count();
        assert_eq!(pngs, frames);
        // The path used is written as an editable file, and reads back.
        let path: serde_json::Value =
            serde_json::from_slice(&std::fs::read(video.join("camera_path.json")).unwrap()).unwrap();
        assert_eq!(path["frames"].as_u64(), Some(frames as u64));
        // Consecutive frames differ (the camera moves) and are not blank.
        let first = std::fs::read(video.join("frames/00000.png")).unwrap();
        let second = std::fs::read(video.join("frames/00001.png")).unwrap();
        assert_ne!(first, second);
    }
    frame_counts.sort();
    assert_eq!(frame_counts, [6, 9]);
}

#[test]
fn a_path_file_with_a_nan_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad_path.json"),
        r#"{"version": 1, "width": 128, "height": 96, "frames": 10, "fps": 30, "keyframes": [
            {"position": [0, 0, 0], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": 100, "fy": 100},
            {"position": [NaN, 0, 1], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": 100, "fy": 100}]}"#,
    )
    .unwrap();
    let stages = "  - {id: along, kind: render-path, inputs: {field: fit, views: ingest}, params: {path: bad_path.json, video: false}}";
    std::fs::write(dir.path().join("p.yaml"), pipeline(stages, "")).unwrap();
    let (output, text) = run(dir.path());
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("bad_path.json"), "the error names the file: {text}");
    assert!(!dir.path().join("work/store").exists() || artifacts(dir.path(), "video").is_empty());
    // NaN is not JSON, so the parse above failed naming the file; a repeated key frame parses, and the
    // checks refuse it.
    let zero = r#"{"version": 1, "width": 128, "height": 96, "frames": 10, "fps": 30, "keyframes": [
            {"position": [0, 0, 0], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": 100, "fy": 100},
            {"position": [0, 0, 0], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": 100, "fy": 100}]}"#;
    std::fs::write(dir.path().join("bad_path.json"), zero).unwrap();
    let (output, text) = run(dir.path());
    assert!(
        !output.status.success() && text.contains("zero-length segment"),
        "{text}"
    );
}

#[test]
#[ignore = "needs ffmpeg (scripts/setup-debian.sh); make test runs it where ffmpeg is installed"]
fn videos_are_h264_and_the_report_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let stages =
        "  - {id: along, kind: render-path, inputs: {field: fit, views: ingest}, params: {frames: 8, keyframes: 3}}";
    std::fs::write(dir.path().join("p.yaml"), pipeline(stages, ", along: along")).unwrap();
    let (output, text) = run(dir.path());
    assert!(output.status.success(), "{text}");
    let video = &artifacts(dir.path(), "video")[0];
    for (file, width) in [("path.mp4", 128), ("side_by_side.mp4", 256)] {
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=codec_name,nb_read_frames,width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(video.join(file))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&probe.stdout).trim(),
            format!("h264,{width},96,8"),
            "{file}"
        );
    }
    let index = std::fs::read_to_string(dir.path().join("work/report/latest/index.html")).unwrap();
    assert!(
        index.contains("<video") && index.contains("videos/along/"),
        "the report links the videos"
    );
    let copied = dir.path().join("work/report/latest/videos/along");
    assert!(
        std::fs::read_dir(&copied).unwrap().next().is_some(),
        "{}",
        copied.display()
    );
}
