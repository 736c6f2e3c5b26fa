//! `kind: exec`: a stage that is an external program in any language. The engine writes a JSON
//! job (inputs by port, the output folder, the stage's `config`) and runs the command with the
//! job's path as last argument (also in `LRF_JOB`); the program writes each declared output port
//! `p` as `<out_dir>/p`. A non-zero exit fails the instance with the program's stderr.
//!
//! ```yaml
//! - id: blur
//!   kind: exec
//!   inputs: {scene: scenes}
//!   params:
//!     command: [python, stages/blur.py]   # `python` is $LRF_PYTHON, else python3
//!     scope: per-scene                     # or global
//!     input_ports: {scene: scene}          # port: type
//!     output_ports: {blurred: image}
//!     config: {radius: 2}                  # passed through to the program
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::key::hash_file;
use crate::registry::BuildContext;
use crate::stage::{Job, Port, Scope, Signature, Stage};

pub const KIND: &str = "exec";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecParams {
    command: Vec<String>,
    #[serde(default = "per_scene")]
    scope: Scope,
    #[serde(default)]
    input_ports: BTreeMap<String, String>,
    output_ports: BTreeMap<String, String>,
    #[serde(default)]
    config: serde_json::Value,
    /// Bump to recompute everything this stage made.
    #[serde(default)]
    version: u32,
}

fn per_scene() -> Scope {
    Scope::PerScene
}

struct ExecStage {
    params: ExecParams,
    /// The command with `python` and relative paths resolved.
    program: Vec<String>,
    /// blake3 of each command argument that is a file (the script): editing it recomputes.
    files: BTreeMap<String, String>,
}

/// The registry factory for `kind: exec`.
pub fn build(params: serde_json::Value, context: &BuildContext) -> Result<Arc<dyn Stage>, String> {
    let params: ExecParams = serde_json::from_value(params).map_err(|e| e.to_string())?;
    if params.command.is_empty() {
        return Err("`command` is empty; give the program and its arguments, e.g. [python, stages/blur.py]".into());
    }
    if params.output_ports.is_empty() {
        return Err("`output_ports` is empty; declare at least one output, e.g. {result: json}".into());
    }
    let mut program = Vec::new();
    let mut files = BTreeMap::new();
    for (i, arg) in params.command.iter().enumerate() {
        if i == 0 && arg == "python" {
            program.push(std::env::var("LRF_PYTHON").unwrap_or_else(|_| "python3".into()));
            continue;
        }
        let path = context.base_dir.join(arg);
        if path.is_file() {
            let hash = hash_file(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            files.insert(arg.clone(), hash.to_hex().to_string());
            program.push(path.to_string_lossy().into_owned());
        } else {
            program.push(arg.clone());
        }
    }
    Ok(Arc::new(ExecStage { params, program, files }))
}

fn ports(map: &BTreeMap<String, String>) -> Vec<Port> {
    map.iter().map(|(name, ty)| Port::new(name, ty)).collect()
}

impl Stage for ExecStage {
    fn kind(&self) -> &str {
        KIND
    }

    fn version(&self) -> u32 {
        self.params.version
    }

    fn signature(&self) -> Signature {
        Signature {
            scope: self.params.scope,
            inputs: ports(&self.params.input_ports),
            outputs: ports(&self.params.output_ports),
        }
    }

    fn params(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(&self.params).unwrap_or_default();
        value["files"] = serde_json::to_value(&self.files).unwrap_or_default();
        value
    }

    fn accepts_partial_inputs(&self) -> bool {
        false
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let job_path = job.out.with_extension("job.json");
        let manifest = serde_json::json!({
            "stage": job.stage_id,
            "scene": job.scene,
            "inputs": job.inputs,
            "config": self.params.config,
            "out_dir": job.out,
            "outputs": self.params.output_ports,
        });
        std::fs::write(&job_path, serde_json::to_string_pretty(&manifest)?)?;
        let output = Command::new(&self.program[0])
            .args(&self.program[1..])
            .arg(&job_path)
            .env("LRF_JOB", &job_path)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot start {:?}: {e}", self.program[0]));
        let _ = std::fs::remove_file(&job_path);
        let output = output?;
        if !output.status.success() {
            anyhow::bail!(
                "{} exited with {}: {}",
                describe(&self.program),
                output.status,
                tail(&output.stderr)
            );
        }
        Ok(())
    }
}

fn describe(program: &[String]) -> String {
    program
        .iter()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last lines of a program's stderr, for the error message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}
