//! `watch`: keep a pipeline up to date while scene folders come and go. Each round rescans the
//! scene globs (and rereads the pipeline file); when the scene collection has changed and held
//! still for one interval (so a folder being copied is not run half-written), the pipeline is
//! planned and run again; so is an edit to the pipeline file. The content-addressed store makes that incremental: a new scene
//! computes its own work and re-fires the global stages over it; a removed scene changes the
//! keys of the global stages that collected it, so they re-run without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dataflow::RunOptions;
use crate::key::ArtifactKey;
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use crate::report::RunReport;
use crate::session::Session;

/// How the scene collection changed since the last run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SceneChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, different content.
    pub changed: Vec<String>,
}

impl SceneChanges {
    fn between(before: &BTreeMap<String, ArtifactKey>, after: &BTreeMap<String, ArtifactKey>) -> Self {
        let mut changes = SceneChanges::default();
        for (name, key) in after {
            match before.get(name) {
                None => changes.added.push(name.clone()),
                Some(old) if old != key => changes.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        changes.removed = before.keys().filter(|n| !after.contains_key(*n)).cloned().collect();
        changes
    }
}

/// What a round did.
pub enum Round {
    /// The pipeline ran because the scenes or the pipeline file changed.
    Ran {
        changes: SceneChanges,
        report: RunReport,
        work_dir: PathBuf,
    },
    /// The pipeline could not be loaded or run; watching goes on.
    Invalid(String),
}

/// What a round looks at: the pipeline file's content and the scene collection.
#[derive(Clone, PartialEq, Eq)]
struct Snapshot {
    pipeline: blake3::Hash,
    scenes: BTreeMap<String, ArtifactKey>,
}

/// Watches until `keep_going` returns false, calling it after every round that ran (or could
/// not, once per distinct error) and once per idle poll with `None`.
pub fn watch(
    file: &Path,
    registry: &Registry,
    interval: Duration,
    options: impl Fn(&Pipeline) -> RunOptions,
    mut keep_going: impl FnMut(Option<Round>) -> bool,
) {
    let mut ran: Option<Snapshot> = None;
    let mut last_scan: Option<Snapshot> = None;
    let mut last_error: Option<String> = None;
    loop {
        let scanned = scan(file, registry);
        let settled = matches!((&scanned, &last_scan), (Ok(now), Some(before)) if now == before);
        last_scan = scanned.as_ref().ok().cloned();
        let result = match scanned {
            Ok(now) if settled && ran.as_ref() != Some(&now) => {
                let before = ran.as_ref().map(|r| r.scenes.clone()).unwrap_or_default();
                let changes = SceneChanges::between(&before, &now.scenes);
                Session::open(file, registry).and_then(|session| {
                    let report = session.run(options(&session.pipeline))?;
                    ran = Some(now);
                    Ok(Some(Round::Ran {
                        changes,
                        report,
                        work_dir: session.pipeline.work_dir.clone(),
                    }))
                })
            }
            Ok(_) => Ok(None),
            Err(error) => Err(error),
        };
        let round = match result {
            Ok(None) => None,
            Ok(round) => {
                last_error = None;
                round
            }
            Err(error) => {
                let message = format!("{error:#}");
                let new = last_error.as_ref() != Some(&message);
                last_error = Some(message.clone());
                new.then_some(Round::Invalid(message))
            }
        };
        if !keep_going(round) {
            return;
        }
        std::thread::sleep(interval);
    }
}

/// The pipeline file's hash and the scene collection (name → content key); fails when the
/// pipeline is invalid.
fn scan(file: &Path, registry: &Registry) -> anyhow::Result<Snapshot> {
    let text = std::fs::read(file)?;
    let pipeline = Pipeline::load(file, registry)?;
    let scenes = crate::scenes::discover(&pipeline.sources)?
        .into_iter()
        .map(|s| (s.name, s.key))
        .collect();
    Ok(Snapshot {
        pipeline: blake3::hash(&text),
        scenes,
    })
}
