//! The HTML report in a real browser: the `summary` stage writes it from two methods' evaluations (one scene
//! failed upstream), headless Chromium loads it, and the page's own load-time check (tables, plots, images,
//! broken images) is read back from the DOM, with no console output allowed. A screenshot is kept when
//! `LRF_REPORT_SCREENSHOT` names a file (docs/report.png is made this way).
//!
//! Needs Chromium (`scripts/setup-debian.sh` installs Debian's); `make test` runs it with
//! `--include-ignored` where `chromium` is found, and says it skipped it where not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lrf_formats::image::{ImageF32, write_png};
use lrf_formats::scene::Split;
use lrf_graph::{FailedInput, Input, Job};
use lrf_stages::artifacts::{Evaluation, METRICS_FILE, Scores, SplitSummary, ViewScores, write_json};
use lrf_stages::report::INDEX_FILE;
use lrf_stages::summary::Summary;
use lrf_vae::metrics::MetricValue;

fn scores(psnr: f64) -> Scores {
    Scores {
        psnr,
        ssim: 0.8,
        lpips: MetricValue::Unavailable,
        st_lpips: MetricValue::Value(0.2),
    }
}

/// An evaluation of two test views with curves, and its side-by-side PNGs in `dir`.
fn evaluation(dir: &Path, scene: &str, psnr: f64) -> Evaluation {
    let views: Vec<ViewScores> = ["000.png", "001.png"]
        .iter()
        .map(|name| ViewScores {
            name: name.to_string(),
            split: Split::Test,
            render: scores(psnr),
            reconstruction: Some(scores(psnr + 8.0)),
            latent_psnr: Some(psnr + 4.0),
        })
        .collect();
    for view in &views {
        let (width, height) = (5 * 32, 24);
        let data = (0..width * height * 3).map(|i| (i % 97) as f32 / 97.0).collect();
        let image = ImageF32 {
            channels: 3,
            width,
            height,
            data,
        };
        write_png(&dir.join(&view.name), &image).unwrap();
    }
    Evaluation {
        scene: scene.into(),
        field: "latent".into(),
        field_downsampling: 8,
        representation: Default::default(),
        gaussians: 1200,
        fit_seconds: 30.0,
        fit_seconds_per_iteration: 0.015,
        fit_iterations: 2000,
        fit_peak_memory_mib: Some(900.0),
        loss_curve: (1..=20).map(|i| (i * 100, 1.0 / i as f64)).collect(),
        gaussian_curve: (1..=10).map(|i| (i * 100, 1000 + 50 * i as usize)).collect(),
        render_seconds_per_view: 0.05,
        summary: vec![SplitSummary {
            split: Split::Test,
            views: 2,
            render: scores(psnr),
            reconstruction: Some(scores(psnr + 8.0)),
            latent_psnr: Some(psnr + 4.0),
        }],
        views,
    }
}

fn write_report(root: &Path) -> PathBuf {
    let mut inputs = BTreeMap::new();
    for (method, offset) in [("original", 0.0), ("plus-stage3", 0.6)] {
        let mut scenes = BTreeMap::new();
        for (scene, psnr) in [("fern", 21.0), ("bird", 24.7)] {
            let dir = root.join(method).join(scene);
            std::fs::create_dir_all(&dir).unwrap();
            write_json(&dir.join(METRICS_FILE), &evaluation(&dir, scene, psnr + offset)).unwrap();
            scenes.insert(scene.to_string(), dir);
        }
        inputs.insert(method.to_string(), Input::PerScene(scenes));
    }
    let missing = [FailedInput {
        port: "plus-stage3".into(),
        stage: "fit".into(),
        scene: Some("room".into()),
    }];
    let out = root.join("out");
    std::fs::create_dir_all(out.join("report")).unwrap();
    let summary = Summary {
        methods: vec!["original".into(), "plus-stage3".into()],
        videos: Vec::new(),
    };
    let job = Job {
        stage_id: "report",
        scene: None,
        inputs: &inputs,
        missing: &missing,
        out: &out,
        status: &|_: &str| {},
    };
    lrf_graph::Stage::run(&summary, &job).unwrap();
    out.join("report").join(INDEX_FILE)
}

/// Chromium, headless and off the network, with a fresh profile.
fn chromium(profile: &Path) -> Command {
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

#[test]
#[ignore = "needs headless Chromium (scripts/setup-debian.sh); make test runs it where chromium is installed"]
fn the_report_renders_its_tables_plots_and_images_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let index = write_report(dir.path());
    let html = std::fs::read_to_string(&index).unwrap();
    for fetch in ["src=\"http", "href=\"http", "src=\"//", "url(", "@import"] {
        assert!(!html.contains(fetch), "nothing is fetched from a network ({fetch})");
    }
    let url = format!("file://{}", index.display());
    let output = chromium(&dir.path().join("profile"))
        .args(["--dump-dom", &url])
        .output()
        .expect("running chromium (install it with scripts/setup-debian.sh)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dom = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the page wrote to the console: {console:?}");
    let check = dom
        .split("data-check=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's load-time check ran (body[data-check])")
        .replace("&quot;", "\"");
    let check: serde_json::Value = serde_json::from_str(&check).unwrap();
    println!("report check: {check}");
    // Metrics, per-view details (4 method/scene pairs), fits: 6 tables; 2 plots for each of the 2 scenes
    // with a fit (none for the failed one); 2 test views per evaluated pair.
    assert_eq!(check["tables"], 6, "{check}");
    assert_eq!(check["plots"], 4, "{check}");
    assert_eq!(check["images"], 8, "{check}");
    assert_eq!(check["broken"], 0, "every image loads: {check}");
    assert!(
        dom.contains("failed: fit failed on this scene"),
        "the failed scene is listed"
    );
    assert!(dom.contains("+0.60"), "the change against the first method is shown");

    let screenshot = std::env::var_os("LRF_REPORT_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("report.png"));
    let output = chromium(&dir.path().join("profile"))
        .args([
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,1800",
            "--hide-scrollbars",
            &url,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot of the page"
    );
}
