//! `summary` (global): the evaluations of several methods over every scene, as one table (`summary.md`, the
//! figures a paper's table would hold), one JSON file and the HTML report (`index.html`, see [`crate::report`]).
//! Each method is an input port named in `methods`; `videos` names `render-path` inputs the report shows.
//! A scene whose evaluation failed upstream is listed as failed, with the stage that failed, and the
//! table still covers the others.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::bail;
use lrf_formats::atomic::write_atomic;
use lrf_formats::scene::Split;
use lrf_graph::{Input, Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};

use crate::artifacts::{Evaluation, METRICS_FILE, Scores};
use crate::artifacts::{output_dir, read_json, write_json};
use crate::path::PATH_RENDER_TYPE;
use crate::report::{ReportRow, VideoRow, write_report};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Summary {
    /// Input port names, one per method, in table order (e.g. `[3dgs-vae, 3dgs-8]`).
    pub methods: Vec<String>,
    /// Input port names of `render-path` stages whose videos the report shows (per scene).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub videos: Vec<String>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            methods: vec!["latent".into()],
            videos: Vec::new(),
        }
    }
}

/// One row of the table.
#[derive(Debug, Serialize)]
struct Row<'a> {
    method: &'a str,
    scene: &'a str,
    #[serde(flatten)]
    result: RowResult,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
enum RowResult {
    Evaluated {
        evaluation: Evaluation,
        /// Where the per-view images are.
        images: String,
    },
    /// No evaluation: this stage failed upstream on the scene.
    Failed { stage: String },
}

impl StageKind for Summary {
    const KIND: &'static str = "summary";
    const VERSION: u32 = 3;
    const PARTIAL_INPUTS: bool = true;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::Global,
            inputs: (self.methods.iter().map(|m| Port::new(m, "evaluation")))
                .chain(self.videos.iter().map(|v| Port::new(v, PATH_RENDER_TYPE)))
                .collect(),
            outputs: vec![Port::new("report", "report")],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.methods.is_empty() {
            return Err("methods must name at least one input".into());
        }
        if let Some(name) = self.videos.iter().find(|v| self.methods.contains(v)) {
            return Err(format!("`{name}` is both a method and a video input"));
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        for method in &self.methods {
            let Input::PerScene(scenes) = job.input(method)? else {
                bail!("summary input `{method}` must come from a per-scene evaluate stage");
            };
            let mut results: BTreeMap<&str, RowResult> = BTreeMap::new();
            for (scene, dir) in scenes {
                let result = RowResult::Evaluated {
                    evaluation: read_json(&dir.join(METRICS_FILE))?,
                    images: dir.display().to_string(),
                };
                results.insert(scene, result);
            }
            for failed in job.missing.iter().filter(|f| &f.port == method) {
                if let Some(scene) = &failed.scene {
                    results.insert(
                        scene,
                        RowResult::Failed {
                            stage: failed.stage.clone(),
                        },
                    );
                }
            }
            rows.extend(results.into_iter().map(|(scene, result)| Row { method, scene, result }));
        }
        let out = output_dir(job, "report")?;
        write_json(&out.join("summary.json"), &rows)?;
        write_atomic(&out.join("summary.md"), table(&rows).as_bytes())?;
        let report_rows: Vec<ReportRow> = rows
            .iter()
            .map(|row| ReportRow {
                method: row.method,
                scene: row.scene,
                result: match &row.result {
                    RowResult::Evaluated { evaluation, images } => Ok((evaluation, Path::new(images.as_str()))),
                    RowResult::Failed { stage } => Err(stage.as_str()),
                },
            })
            .collect();
        let mut videos = Vec::new();
        for name in &self.videos {
            let Input::PerScene(scenes) = job.input(name)? else {
                bail!("summary video input `{name}` must come from a per-scene render-path stage");
            };
            videos.extend(scenes.iter().map(|(scene, dir)| VideoRow { name, scene, dir }));
        }
        write_report(
            &out,
            &format!("lrf-flow report: {}", self.methods.join(", ")),
            &report_rows,
            &videos,
        )
    }
}

fn table(rows: &[Row]) -> String {
    let fmt = |s: &Scores| format!("{:.2} | {:.4} | {} | {}", s.psnr, s.ssim, s.st_lpips, s.lpips);
    let mut text = String::from(
        "# Test views\n\n| method | scene | views | PSNR | SSIM | ST-LPIPS | LPIPS | latent PSNR | autoencoder ceiling PSNR | \
         SSIM | ST-LPIPS | LPIPS | field | Gaussians | fit s | s/iteration |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let e = match &row.result {
            RowResult::Evaluated { evaluation, .. } => evaluation,
            RowResult::Failed { stage } => {
                let _ = writeln!(
                    text,
                    "| {} | {} | failed: {stage} failed on this scene |",
                    row.method, row.scene
                );
                continue;
            }
        };
        let Some(test) = e.summary.iter().find(|s| s.split == Split::Test) else {
            continue;
        };
        let ceiling = test.reconstruction.as_ref().map_or("– | – | – | –".to_string(), fmt);
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.4} |",
            row.method,
            row.scene,
            test.views,
            fmt(&test.render),
            test.latent_psnr.map_or("–".into(), |p| format!("{p:.2}")),
            ceiling,
            e.representation.name(),
            crate::report::gaussian_count(e),
            e.fit_seconds,
            e.fit_seconds_per_iteration
        );
    }
    text.push_str(
        "\nSide-by-side images (ground truth | render | autoencoder reconstruction | error | latent false colour):\n\n",
    );
    for row in rows {
        if let RowResult::Evaluated { images, .. } = &row.result {
            let _ = writeln!(text, "- {} / {}: {images}", row.method, row.scene);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lrf_formats::scene::Split;
    use lrf_graph::{FailedInput, Input, Job};
    use lrf_vae::metrics::MetricValue;

    use super::Summary;
    use crate::artifacts::write_json;
    use crate::artifacts::{Evaluation, METRICS_FILE, Scores, SplitSummary, ViewScores};

    fn evaluation(scene: &str, psnr: f64) -> Evaluation {
        let scores = Scores {
            psnr,
            ssim: 1.0,
            lpips: MetricValue::Unavailable,
            st_lpips: MetricValue::Value(0.1),
        };
        Evaluation {
            scene: scene.into(),
            field: "latent".into(),
            field_downsampling: 8,
            representation: Default::default(),
            gaussians: 10,
            fit_seconds: 1.0,
            fit_seconds_per_iteration: 0.1,
            fit_iterations: 10,
            fit_peak_memory_mib: None,
            loss_curve: vec![],
            gaussian_curve: vec![],
            render_seconds_per_view: 0.0,
            summary: vec![SplitSummary {
                split: Split::Test,
                views: 1,
                render: scores.clone(),
                reconstruction: Some(scores.clone()),
                latent_psnr: Some(30.0),
            }],
            views: vec![ViewScores {
                name: "0".into(),
                split: Split::Test,
                render: scores.clone(),
                reconstruction: Some(scores),
                latent_psnr: Some(30.0),
            }],
        }
    }

    /// An exact reconstruction (infinite PSNR) and a scene that failed upstream both end up in the table.
    #[test]
    fn a_perfect_scene_and_a_failed_one_leave_the_others_in_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut scenes = BTreeMap::new();
        for (scene, psnr) in [("black", f64::INFINITY), ("fern", 25.5)] {
            let folder = dir.path().join(scene);
            std::fs::create_dir(&folder).unwrap();
            write_json(&folder.join(METRICS_FILE), &evaluation(scene, psnr)).unwrap();
            scenes.insert(scene.to_string(), folder);
        }
        let stored = std::fs::read_to_string(dir.path().join("black").join(METRICS_FILE)).unwrap();
        assert!(stored.contains("\"psnr\": \"inf\""), "{stored}");
        let inputs = BTreeMap::from([("latent".to_string(), Input::PerScene(scenes))]);
        let missing = [FailedInput {
            port: "latent".into(),
            stage: "evaluate".into(),
            scene: Some("bird".into()),
        }];
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("report")).unwrap();
        let job = Job {
            stage_id: "summary",
            scene: None,
            inputs: &inputs,
            missing: &missing,
            out: &out,
            status: &|_: &str| {},
        };
        lrf_graph::Stage::run(&Summary::default(), &job).unwrap();
        let table = std::fs::read_to_string(out.join("report/summary.md")).unwrap();
        assert!(table.contains("| latent | black | 1 | inf |"), "{table}");
        assert!(table.contains("| latent | fern | 1 | 25.50 |"), "{table}");
        assert!(
            table.contains("| latent | bird | failed: evaluate failed on this scene |"),
            "{table}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report/summary.json")).unwrap()).unwrap();
        assert_eq!(json.as_array().map(Vec::len), Some(3), "{json}");
    }
}
