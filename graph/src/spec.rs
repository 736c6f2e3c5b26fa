//! The pipeline file as written: YAML read with serde-saphyr into types that keep each value's
//! position, so validation can point at the line that needs fixing.
//!
//! ```yaml
//! pipeline: full                     # name, used in reports
//! work_dir: ../work/full             # store and reports; relative to this file (default work/<name>)
//! workers: 2                         # default for -w
//! scenes:                            # scene sources, each with a role
//!   - {glob: ../data/real_train/*, role: train}   # folders matching a glob (relative to this file)
//!   - {glob: ../data/real/*, role: eval}
//!   - generate: synth                # or: scenes a registered generator writes, once, into
//!     params: {scenes: 2, seed: 7}   #   <work_dir>/scenes/synth-<hash of params>/ (params: the
//!     role: train                    #   generator's, checked by it; reused while unchanged)
//! stages:
//!   - id: stats                      # unique id
//!     kind: exec                     # a registered kind (`lrf-flow plan` lists them on a typo)
//!     inputs: {scene: scenes}        # input port → `scenes`, `stage` or `stage.port`
//!     params: {...}                  # the kind's parameters; defaults apply, typos are errors
//!     roles: [train]                 # optional: scenes it runs on (per-scene) or collects (global)
//!     pin: 3f2a9c1e                  # optional, global stages: reuse this stored artifact
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::error::{SpecError, SpecErrors};

/// A pipeline file, parsed but not yet validated.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The pipeline's name, used in reports.
    pub pipeline: String,
    /// Where the artifact store and reports live; relative to the pipeline file. Default: `work/<pipeline>`.
    #[serde(default)]
    pub work_dir: Option<String>,
    /// Default worker threads (`-w` overrides); at least 1.
    #[serde(default, deserialize_with = "at_least_one_worker")]
    pub workers: Option<usize>,
    pub scenes: Vec<Spanned<SceneSource>>,
    pub stages: Vec<Spanned<StageSpec>>,
}

/// Scene folders, all with one role: matched by a glob (relative to the pipeline file), or
/// written by a registered generator. Exactly one of `glob` and `generate` (checked when
/// validating).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneSource {
    #[serde(default)]
    pub glob: Option<Spanned<String>>,
    /// A registered scene generator's name.
    #[serde(default)]
    pub generate: Option<Spanned<String>>,
    /// The generator's parameters; checked by the generator itself.
    #[serde(default)]
    pub params: Option<Spanned<serde_json::Value>>,
    pub role: String,
    /// A glob may match no scene folder (a corpus folder filled later, or watched); otherwise that is an
    /// error, as a mistyped path usually is.
    #[serde(default)]
    pub allow_empty: bool,
}

/// One stage as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub id: Spanned<String>,
    pub kind: Spanned<String>,
    /// Input port → `scenes`, `stage` (its only output) or `stage.port`.
    #[serde(default)]
    pub inputs: BTreeMap<String, Spanned<String>>,
    /// The stage's parameters; checked by the stage kind itself.
    #[serde(default)]
    pub params: Option<Spanned<serde_json::Value>>,
    /// Scene roles this stage runs on (per-scene) or collects (global). Default: all roles.
    #[serde(default)]
    pub roles: Option<Spanned<Vec<String>>>,
    /// Global stages only: use this stored artifact (key or unique prefix) instead of computing.
    #[serde(default)]
    pub pin: Option<Spanned<String>>,
}

/// The first pass over a file that failed to parse strictly: only enough to tell which stage a
/// parse error falls in.
#[derive(Deserialize)]
struct Outline {
    #[serde(default)]
    stages: Vec<Spanned<OutlineStage>>,
}

#[derive(Deserialize)]
struct OutlineStage {
    #[serde(default)]
    id: Option<String>,
}

/// Position of a value in the file, for error messages.
pub fn position(location: &Location) -> (u64, u64) {
    (location.line(), location.column())
}

impl PipelineSpec {
    /// Reads and parses a pipeline file.
    pub fn read(file: &Path) -> Result<Self, SpecErrors> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            SpecErrors(vec![SpecError {
                file: file.to_owned(),
                line: 0,
                column: 0,
                stage: None,
                message: format!("cannot read the pipeline file: {e}"),
            }])
        })?;
        Self::parse(&text, file)
    }

    /// Parses pipeline YAML; `file` is only used to name the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, SpecErrors> {
        serde_saphyr::from_str::<PipelineSpec>(text).map_err(|error| {
            let (line, column) = error.location().map(|l| position(&l)).unwrap_or((0, 0));
            let message = error.without_snippet().to_string();
            let mut message = strip_position(&message).to_owned();
            if message.starts_with("duplicate mapping key") {
                message += "; each key may appear once in a mapping: remove or merge the repeated one";
            }
            SpecErrors(vec![SpecError {
                file: PathBuf::from(file),
                line,
                column,
                stage: stage_at(text, line),
                message,
            }])
        })
    }
}

/// The id of the stage whose block contains `line`, read leniently.
fn stage_at(text: &str, line: u64) -> Option<String> {
    let outline = serde_saphyr::from_str::<Outline>(text).ok()?;
    outline
        .stages
        .iter()
        .rev()
        .find(|s| s.referenced.line() <= line)
        .and_then(|s| s.value.id.clone())
}

/// serde-saphyr adds "line L column C" to messages; we print the position ourselves.
fn strip_position(message: &str) -> &str {
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let message = match message.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((position, rest)) if position.contains("column") => rest,
        _ => message,
    };
    let message = match message.rsplit_once(" at line ") {
        Some((text, position)) if position.contains("column") => text,
        _ => message,
    };
    // The parser's advice on duplicate keys names its own option, which a pipeline file cannot set.
    message
        .strip_suffix(", set DuplicateKeyPolicy in Options if acceptable")
        .unwrap_or(message)
}

fn at_least_one_worker<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    match <Option<usize> as serde::Deserialize>::deserialize(deserializer)? {
        Some(0) => Err(serde::de::Error::custom(
            "workers: 0 runs nothing; give at least 1 worker thread (or leave it out for 1)",
        )),
        workers => Ok(workers),
    }
}
