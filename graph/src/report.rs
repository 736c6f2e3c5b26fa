//! The run report: what each stage instance did (cached, computed, failed, skipped), per-stage
//! totals and timings, as JSON for tools and a short summary for people.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::key::ArtifactKey;
use crate::pipeline::Pipeline;
use crate::plan::Plan;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    Cached,
    Computed,
    Failed {
        error: String,
    },
    /// Not attempted because an input failed.
    Skipped {
        reason: String,
    },
}

/// What happened to one stage instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub stage: String,
    pub scene: Option<String>,
    pub key: ArtifactKey,
    #[serde(flatten)]
    pub status: Status,
    /// Inputs that failed upstream and that this instance ran without (a summary over the scenes that
    /// succeeded); its artifact is then not the planned one.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub missing: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTotals {
    pub stage: String,
    pub cached: usize,
    pub computed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Time spent computing (summed over instances).
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub pipeline: String,
    pub workers: usize,
    pub seconds: f64,
    pub stages: Vec<StageTotals>,
    /// Stage then scene order.
    pub outcomes: Vec<Outcome>,
}

impl RunReport {
    pub fn new(pipeline: &Pipeline, plan: &Plan, mut outcomes: Vec<Outcome>, workers: usize, seconds: f64) -> Self {
        // Positions by name, looked up once per outcome: a scan of the scenes per comparison made a report
        // quadratic in scenes.
        let scenes: std::collections::HashMap<&str, usize> = plan
            .scenes
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let stages: std::collections::HashMap<&str, usize> = pipeline
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let order = |o: &Outcome| {
            let stage = stages.get(o.stage.as_str()).copied().unwrap_or(usize::MAX);
            let scene = o.scene.as_deref().and_then(|n| scenes.get(n).copied());
            (stage, scene)
        };
        outcomes.sort_by_cached_key(order);
        let stages = pipeline
            .stages
            .iter()
            .map(|node| {
                let mut totals = StageTotals {
                    stage: node.id.clone(),
                    ..Default::default()
                };
                for o in outcomes.iter().filter(|o| o.stage == node.id) {
                    totals.seconds += o.seconds;
                    match o.status {
                        Status::Cached => totals.cached += 1,
                        Status::Computed => totals.computed += 1,
                        Status::Failed { .. } => totals.failed += 1,
                        Status::Skipped { .. } => totals.skipped += 1,
                    }
                }
                totals
            })
            .collect();
        RunReport {
            pipeline: pipeline.name.clone(),
            workers,
            seconds,
            stages,
            outcomes,
        }
    }

    pub fn failed(&self) -> usize {
        self.stages.iter().map(|s| s.failed + s.skipped).sum()
    }

    /// Instances computed by this run, as (stage, scene).
    pub fn computed(&self) -> Vec<(String, Option<String>)> {
        self.outcomes
            .iter()
            .filter(|o| o.status == Status::Computed)
            .map(|o| (o.stage.clone(), o.scene.clone()))
            .collect()
    }

    /// A table per stage, then every failure with its error.
    pub fn summary(&self) -> String {
        let width = self.stages.iter().map(|s| s.stage.len()).max().unwrap_or(5).max(5);
        let mut text = format!(
            "run {} — {:.2} s, {} workers\n",
            self.pipeline, self.seconds, self.workers
        );
        let _ = writeln!(
            text,
            "  {:width$}  {:>8}  {:>6}  {:>6}  {:>7}  {:>9}",
            "stage", "computed", "cached", "failed", "skipped", "time"
        );
        for s in &self.stages {
            let _ = writeln!(
                text,
                "  {:width$}  {:>8}  {:>6}  {:>6}  {:>7}  {:>8.2}s",
                s.stage, s.computed, s.cached, s.failed, s.skipped, s.seconds
            );
        }
        for o in &self.outcomes {
            let scene = o.scene.as_deref().map(|s| format!(" on {s}")).unwrap_or_default();
            match &o.status {
                Status::Failed { error } => {
                    let _ = writeln!(text, "FAILED {}{scene}: {error}", o.stage);
                }
                Status::Skipped { reason } => {
                    let _ = writeln!(text, "skipped {}{scene}: {reason}", o.stage);
                }
                Status::Cached | Status::Computed if !o.missing.is_empty() => {
                    let _ = writeln!(
                        text,
                        "partial {}{scene}: without {}, which failed",
                        o.stage,
                        o.missing.join(", ")
                    );
                }
                _ => {}
            }
        }
        text
    }

    /// Writes `reports/run-<unix seconds>-<pid>.json` and `reports/latest.json` under the work directory,
    /// each atomically; errors name the path.
    pub fn write(&self, work_dir: &Path) -> std::io::Result<PathBuf> {
        let dir = work_dir.join("reports");
        let named = |path: &Path, e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        std::fs::create_dir_all(&dir).map_err(|e| named(&dir, e))?;
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let path = dir.join(format!("run-{}-{}.json", now.as_secs(), std::process::id()));
        for target in [&path, &dir.join("latest.json")] {
            let write = || -> std::io::Result<()> {
                let mut file = tempfile::NamedTempFile::new_in(&dir)?;
                std::io::Write::write_all(&mut file, text.as_bytes())?;
                file.persist(target).map_err(|e| e.error)?;
                Ok(())
            };
            write().map_err(|e| named(target, e))?;
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cluster processes send their outcomes to process 0 as JSON: every status must come back as it went.
    #[test]
    fn outcomes_round_trip_through_json() {
        let statuses = [
            Status::Cached,
            Status::Computed,
            Status::Failed {
                error: "no images".into(),
            },
            Status::Skipped {
                reason: "ingest failed".into(),
            },
        ];
        for (i, status) in statuses.into_iter().enumerate() {
            let outcome = Outcome {
                stage: "fit".into(),
                scene: (i % 2 == 0).then(|| format!("scene{i}")),
                key: ArtifactKey([i as u8; 32]),
                status,
                missing: if i == 3 { vec!["views".into()] } else { vec![] },
                seconds: 0.25 * i as f64,
            };
            let back: Outcome = serde_json::from_str(&serde_json::to_string(&outcome).unwrap()).unwrap();
            assert_eq!(
                (
                    &back.stage,
                    &back.scene,
                    back.key,
                    &back.status,
                    &back.missing,
                    back.seconds
                ),
                (
                    &outcome.stage,
                    &outcome.scene,
                    outcome.key,
                    &outcome.status,
                    &outcome.missing,
                    outcome.seconds
                )
            );
        }
    }
}
