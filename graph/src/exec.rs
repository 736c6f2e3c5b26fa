//! `kind: exec`: a stage that is an external program in any language. The engine writes a JSON
//! job (inputs by port, the output folder, the stage's `config`) and runs the command with the
//! job's path as last argument (also in `LRF_JOB`); the program writes each declared output port
//! `p` as `<out_dir>/p`. A non-zero exit fails the instance with the tail of the program's stderr.
//!
//! What the program may touch: it runs with its output folder as working directory and may write only
//! there; it may read its inputs (scene folders and artifacts) but not change them. After it exits, the
//! inputs' files (paths, sizes, modification times) are compared with what they were before, and any
//! change fails the instance. Other artifacts in the store are not watched (other instances commit there
//! meanwhile); a write into one is found by `lrf-flow verify` or `run --verify`, which recompute it. It runs in a process group of its own, which is killed when `timeout`
//! runs out, when the run is interrupted (SIGINT, SIGTERM, SIGHUP), or when its job thread fails.
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
//!     timeout: 600                         # seconds (default 7200); not part of the key
//! ```

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::key::hash_file;
use crate::registry::BuildContext;
use crate::stage::{Input, Job, Port, Scope, Signature, Stage};

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
    /// Seconds the program may run before its process group is killed and the instance fails. Left out
    /// of the key: raising it must not recompute what finished.
    #[serde(default = "default_timeout", skip_serializing)]
    timeout: f64,
}

fn per_scene() -> Scope {
    Scope::PerScene
}

/// Two hours: long enough for a training script on a CPU, short enough that a hung one is noticed.
fn default_timeout() -> f64 {
    7200.0
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
    if !(params.timeout > 0.0 && params.timeout <= 30.0 * 86400.0) {
        return Err(format!("timeout = {} s is out of range (0, 2592000]", params.timeout));
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
            // Absolute: the program runs in its output folder.
            let path = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
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

    fn params(&self) -> Result<serde_json::Value, String> {
        let json = |e: serde_json::Error| format!("the parameters cannot be written as JSON: {e}");
        let mut value = serde_json::to_value(&self.params).map_err(json)?;
        value["files"] = serde_json::to_value(&self.files).map_err(json)?;
        Ok(value)
    }

    fn accepts_partial_inputs(&self) -> bool {
        false
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        // Every path the program sees is absolute: it runs in its output folder.
        let absolute = |path: &Path| std::path::absolute(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
        let out = absolute(job.out)?;
        let job_path = out.with_extension("job.json");
        let mut inputs = BTreeMap::new();
        for (port, input) in job.inputs {
            let input = match input {
                Input::One(path) => Input::One(absolute(path)?),
                Input::PerScene(paths) => Input::PerScene(
                    paths
                        .iter()
                        .map(|(scene, path)| Ok((scene.clone(), absolute(path)?)))
                        .collect::<anyhow::Result<_>>()?,
                ),
            };
            inputs.insert(port.clone(), input);
        }
        let manifest = serde_json::json!({
            "stage": job.stage_id,
            "scene": job.scene,
            "inputs": inputs,
            "config": self.params.config,
            "out_dir": out,
            "outputs": self.params.output_ports,
        });
        std::fs::write(&job_path, serde_json::to_string_pretty(&manifest)?)?;
        let stderr_path = job.out.with_extension("stderr");
        let before = fingerprint(job)?;
        let result = self.spawn_and_wait(job, &job_path, &stderr_path);
        let stderr = std::fs::read(&stderr_path).unwrap_or_default();
        let _ = std::fs::remove_file(&job_path);
        let _ = std::fs::remove_file(&stderr_path);
        let status = result?;
        let changed = changes(&before, &fingerprint(job)?);
        if !changed.is_empty() {
            anyhow::bail!(
                "{} changed its inputs, which an exec stage must only read: {}",
                describe(&self.program),
                changed.join(", ")
            );
        }
        if !status.success() {
            anyhow::bail!("{} exited with {status}: {}", describe(&self.program), tail(&stderr));
        }
        Ok(())
    }
}

impl ExecStage {
    /// Runs the program in its own process group with the output folder as working directory, stderr to
    /// `stderr_path`; kills the group when the timeout runs out.
    fn spawn_and_wait(
        &self,
        job: &Job,
        job_path: &Path,
        stderr_path: &Path,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let stderr = std::fs::File::create(stderr_path)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", stderr_path.display()))?;
        let child = Command::new(&self.program[0])
            .args(&self.program[1..])
            .arg(job_path)
            .env("LRF_JOB", job_path)
            .current_dir(job.out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {:?}: {e}", self.program[0]))?;
        let mut group = children::ChildGroup::new(child);
        let deadline = Instant::now() + Duration::from_secs_f64(self.params.timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = group.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                group.kill();
                anyhow::bail!(
                    "{} ran longer than its timeout of {} s and was killed (with its process group); raise \
                     `timeout` in the stage's params if it needs longer",
                    describe(&self.program),
                    self.params.timeout
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// Every input file of a job with its size and modification time.
fn fingerprint(job: &Job) -> anyhow::Result<BTreeMap<PathBuf, (u64, std::time::SystemTime)>> {
    let mut files = BTreeMap::new();
    let mut roots: Vec<&Path> = Vec::new();
    for input in job.inputs.values() {
        match input {
            Input::One(path) => roots.push(path),
            Input::PerScene(paths) => roots.extend(paths.values().map(PathBuf::as_path)),
        }
    }
    for root in roots {
        let mut paths = Vec::new();
        if root.is_dir() {
            crate::scenes::collect_all_files(root, root, &mut paths)?;
            paths.iter_mut().for_each(|p| *p = root.join(&*p));
        } else {
            paths.push(root.to_owned());
        }
        for path in paths {
            let meta = std::fs::metadata(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            files.insert(path, (meta.len(), meta.modified()?));
        }
    }
    Ok(files)
}

/// What differs between two fingerprints, one entry per path.
fn changes(
    before: &BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
    after: &BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
) -> Vec<String> {
    let mut changed = Vec::new();
    for (path, stamp) in before {
        match after.get(path) {
            None => changed.push(format!("{} was removed", path.display())),
            Some(now) if now != stamp => changed.push(format!("{} was modified", path.display())),
            Some(_) => {}
        }
    }
    changed.extend(
        after
            .keys()
            .filter(|p| !before.contains_key(*p))
            .map(|p| format!("{} was added", p.display())),
    );
    changed
}

/// Process groups of running exec programs: a run that is interrupted or whose job thread fails takes
/// them along instead of leaving orphans.
mod children {
    use std::process::{Child, ExitStatus};
    use std::sync::Once;
    use std::sync::atomic::{AtomicI32, Ordering};

    const SLOTS: usize = 256;
    /// Group ids of running programs (0: free). A signal handler reads them, so they are atomics.
    static GROUPS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];
    static HANDLERS: Once = Once::new();

    /// Kills every registered group, then dies of the same signal. Only async-signal-safe calls.
    extern "C" fn on_signal(signal: libc::c_int) {
        for group in &GROUPS {
            let id = group.load(Ordering::SeqCst);
            if id > 0 {
                // SAFETY: kill(2) on a process group id this process created.
                unsafe { libc::kill(-id, libc::SIGKILL) };
            }
        }
        // SAFETY: restoring the default action and re-raising are async-signal-safe.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }

    fn install_handlers() {
        HANDLERS.call_once(|| {
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                // SAFETY: the handler only loads atomics and calls kill, signal and raise.
                unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
            }
        });
    }

    /// A running program and its process group, killed when dropped unfinished.
    pub(super) struct ChildGroup {
        child: Child,
        slot: Option<usize>,
        done: bool,
    }

    impl ChildGroup {
        pub(super) fn new(child: Child) -> Self {
            install_handlers();
            // With `process_group(0)` the group id is the child's pid.
            let id = child.id() as i32;
            let slot = GROUPS
                .iter()
                .position(|g| g.compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst).is_ok());
            if slot.is_none() {
                tracing::warn!("more than {SLOTS} exec programs at once: an interrupted run may leave some behind");
            }
            ChildGroup {
                child,
                slot,
                done: false,
            }
        }

        pub(super) fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
            let status = self.child.try_wait()?;
            if status.is_some() {
                self.done = true;
                self.release();
            }
            Ok(status)
        }

        /// Kills the whole group (the program and anything it started) and reaps the program.
        pub(super) fn kill(&mut self) {
            // SAFETY: kill(2) on the group this child leads.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
            self.done = true;
            self.release();
        }

        fn release(&mut self) {
            if let Some(slot) = self.slot.take() {
                GROUPS[slot].store(0, Ordering::SeqCst);
            }
        }
    }

    impl Drop for ChildGroup {
        fn drop(&mut self) {
            if !self.done {
                self.kill();
            }
        }
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

/// The end of a program's stderr for the error message: its last 12 lines, and at most 4 KiB of them.
fn tail(stderr: &[u8]) -> String {
    const LIMIT: usize = 4096;
    let start = stderr.len().saturating_sub(LIMIT);
    let text = String::from_utf8_lossy(&stderr[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(12)..].join("\n");
    match start {
        0 => tail,
        _ => format!("[{start} bytes before this left out] {tail}"),
    }
}
