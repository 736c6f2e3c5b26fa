//! `kind: exec` stages: a Python program gets a JSON job and writes its declared outputs.
//! The interpreter is $LRF_PYTHON, default the repository's .venv/bin/python.

mod common;

use common::Project;
use lrf_graph::{RunOptions, Session, Status};

fn python() -> String {
    // The Makefile sets LRF_PYTHON; without it, the repository's own virtualenv.
    std::env::var("LRF_PYTHON").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").into())
}

const STAGE: &str = r#"
import json, pathlib, sys
job = json.loads(pathlib.Path(sys.argv[-1]).read_text())
if job["scene"] == job["config"].get("fail_on"):
    sys.exit("cannot read " + job["scene"])
files = sorted(p.name for p in pathlib.Path(job["inputs"]["scene"]).rglob("*") if p.is_file())
out = pathlib.Path(job["out_dir"])
(out / "listing").write_text(json.dumps({"scene": job["scene"], "files": files, "salt": job["config"]["salt"]}))
"#;

const GLOBAL: &str = r#"
import json, pathlib, sys
job = json.loads(pathlib.Path(sys.argv[-1]).read_text())
names = sorted(job["inputs"]["listing"])
(pathlib.Path(job["out_dir"]) / "index").write_text("\n".join(names))
"#;

fn pipeline(python: &str, salt: u32, fail_on: &str) -> String {
    format!(
        r#"
pipeline: exec
work_dir: work
scenes: [{{glob: "scenes/train/*", role: train}}]
stages:
  - id: listing
    kind: exec
    inputs: {{scene: scenes}}
    params:
      command: ["{python}", list.py]
      input_ports: {{scene: scene}}
      output_ports: {{listing: json}}
      config: {{salt: {salt}, fail_on: "{fail_on}"}}
  - id: index
    kind: exec
    inputs: {{listing: listing}}
    params:
      command: ["{python}", index.py]
      scope: global
      input_ports: {{listing: json}}
      output_ports: {{index: text}}
"#
    )
}

fn session(project: &Project) -> Session {
    Session::open(&project.pipeline_file(), &lrf_graph::Registry::builtin()).expect("session")
}

fn run(project: &Project) -> lrf_graph::RunReport {
    session(project)
        .run(RunOptions {
            workers: 2,
            ..RunOptions::default()
        })
        .expect("run")
}

#[test]
fn a_python_stage_reads_its_job_and_writes_its_outputs() {
    let project = Project::new(&pipeline(&python(), 1, ""), &["a", "b"], &[]);
    std::fs::write(project.path().join("list.py"), STAGE).expect("script");
    std::fs::write(project.path().join("index.py"), GLOBAL).expect("script");
    let report = run(&project);
    assert_eq!(report.failed(), 0, "{}", report.summary());
    let session = session(&project);
    let key = session.plan.stages[0].instances[0].key;
    let listing = std::fs::read_to_string(session.store.path(&key).join("listing")).expect("output");
    assert_eq!(listing, r#"{"scene": "a", "files": ["0.txt"], "salt": 1}"#);
    let index_key = session.plan.stages[1].instances[0].key;
    assert_eq!(
        std::fs::read_to_string(session.store.path(&index_key).join("index")).expect("index"),
        "a\nb"
    );
    session.store.verify(&index_key).expect("manifest verifies");

    // Nothing changed: nothing runs. Editing the script recomputes its stage and what follows.
    assert!(run(&project).outcomes.iter().all(|o| o.status == Status::Cached));
    std::fs::write(project.path().join("list.py"), format!("{STAGE}\n# edited\n")).expect("script");
    let report = run(&project);
    assert_eq!(report.computed().len(), 3, "{}", report.summary());
}

#[test]
fn a_failing_program_reports_its_stderr() {
    let project = Project::new(&pipeline(&python(), 1, "b"), &["a", "b"], &[]);
    std::fs::write(project.path().join("list.py"), STAGE).expect("script");
    std::fs::write(project.path().join("index.py"), GLOBAL).expect("script");
    let report = run(&project);
    let failed = report
        .outcomes
        .iter()
        .find(|o| matches!(o.status, Status::Failed { .. }))
        .expect("a failure");
    assert_eq!(failed.scene.as_deref(), Some("b"));
    assert!(
        matches!(&failed.status, Status::Failed { error } if error.contains("cannot read b")),
        "{failed:?}"
    );
}

#[test]
fn exec_params_are_validated() {
    let project = Project::new(
        &pipeline(&python(), 1, "").replace("output_ports: {listing: json}", "output_ports: {}"),
        &["a"],
        &[],
    );
    let error = Session::open(&project.pipeline_file(), &lrf_graph::Registry::builtin())
        .err()
        .expect("invalid");
    assert!(format!("{error:#}").contains("`output_ports` is empty"), "{error:#}");
}

#[test]
fn a_program_that_skips_a_declared_output_fails_the_instance() {
    let project = Project::new(&pipeline(&python(), 1, ""), &["a"], &[]);
    std::fs::write(project.path().join("list.py"), "import sys\n").expect("script");
    std::fs::write(project.path().join("index.py"), GLOBAL).expect("script");
    let report = run(&project);
    let failed = report.outcomes.iter().find(|o| o.stage == "listing").expect("outcome");
    assert!(
        matches!(&failed.status, Status::Failed { error } if error == "the stage did not write its output(s) listing"),
        "{failed:?}"
    );
    let session = session(&project);
    assert!(
        session.store.keys().expect("keys").is_empty(),
        "nothing is committed for a failed instance"
    );
}

/// A one-stage pipeline running `script` per scene with extra params (YAML flow-map entries).
fn single(script: &str, extra: &str) -> String {
    let python = python();
    format!(
        r#"
pipeline: exec
work_dir: work
scenes: [{{glob: "scenes/train/*", role: train}}]
stages:
  - id: probe
    kind: exec
    inputs: {{scene: scenes}}
    params: {{command: ["{python}", {script}], input_ports: {{scene: scene}}, output_ports: {{result: json}}{extra}}}
"#
    )
}

fn error_of(report: &lrf_graph::RunReport) -> String {
    match &report
        .outcomes
        .iter()
        .find(|o| o.stage == "probe")
        .expect("outcome")
        .status
    {
        Status::Failed { error } => error.clone(),
        other => panic!("expected a failure, got {other:?}\n{}", report.summary()),
    }
}

/// Whether process `pid` is still alive (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Whether process `pid` ends within 5 s (a kill takes a moment to land).
fn ends(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    !alive(pid)
}

/// Waits up to 5 s for a file the program writes (the pid of what it started).
fn read_pid(path: &std::path::Path) -> u32 {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} was never written", path.display());
}

/// Starts `sleep 60` in the background (same process group), records its pid, then hangs.
const HANG: &str = r#"
import pathlib, subprocess, sys, time
child = subprocess.Popen(["sleep", "60"])
pathlib.Path(sys.argv[1]).write_text(str(child.pid))
time.sleep(60)
"#;

#[test]
fn a_program_past_its_timeout_is_killed_with_what_it_started() {
    let pids = tempfile::tempdir().expect("temp dir");
    let pid_file = pids.path().join("grandchild.pid");
    let project = Project::new(
        &single(&format!("hang.py, {}", pid_file.display()), ", timeout: 1"),
        &["a"],
        &[],
    );
    std::fs::write(project.path().join("hang.py"), HANG).expect("script");
    let started = std::time::Instant::now();
    let error = error_of(&run(&project));
    assert!(
        error.contains("ran longer than its timeout of 1 s and was killed"),
        "{error}"
    );
    assert!(started.elapsed().as_secs() < 30, "the timeout did not fire");
    let grandchild = read_pid(&pid_file);
    assert!(
        ends(grandchild),
        "the program's own child {grandchild} was left running"
    );
}

#[test]
fn a_program_that_writes_into_its_input_scene_fails() {
    const WRITES: &str = r#"
import json, pathlib, sys
job = json.loads(pathlib.Path(sys.argv[-1]).read_text())
(pathlib.Path(job["inputs"]["scene"]) / "images" / "extra.txt").write_text("written by a stage")
pathlib.Path("result").write_text("{}")
"#;
    let project = Project::new(&single("writes.py", ""), &["a"], &[]);
    std::fs::write(project.path().join("writes.py"), WRITES).expect("script");
    let error = error_of(&run(&project));
    assert!(
        error.contains("changed its inputs, which an exec stage must only read")
            && error.contains("extra.txt was added"),
        "{error}"
    );
}

#[test]
fn a_relative_output_lands_in_the_output_folder_and_a_huge_stderr_is_cut() {
    const RELATIVE: &str = "import pathlib\npathlib.Path('result').write_text('{}')\n";
    let project = Project::new(&single("relative.py", ""), &["a"], &[]);
    std::fs::write(project.path().join("relative.py"), RELATIVE).expect("script");
    let report = run(&project);
    assert_eq!(report.failed(), 0, "{}", report.summary());

    const NOISY: &str = "import sys\nsys.stderr.write('x' * 5_000_000 + '\\nthe last words\\n')\nsys.exit(3)\n";
    std::fs::write(project.path().join("relative.py"), NOISY).expect("script");
    let error = error_of(&run(&project));
    assert!(
        error.ends_with("the last words"),
        "{}",
        &error[error.len().saturating_sub(200)..]
    );
    assert!(error.len() < 5000, "{} bytes of stderr in the report", error.len());
}

const CHILD_DIR: &str = "LRF_EXEC_TEST_DIR";

/// The interrupted process: runs the pipeline in $LRF_EXEC_TEST_DIR. A no-op in a normal test run.
#[test]
fn exec_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let file = std::path::Path::new(&dir).join("pipeline.yaml");
    let session = Session::open(&file, &lrf_graph::Registry::builtin()).expect("session");
    let _ = session.run(RunOptions::default());
}

#[test]
fn an_interrupted_run_takes_its_programs_along() {
    let pids = tempfile::tempdir().expect("temp dir");
    let pid_file = pids.path().join("grandchild.pid");
    let project = Project::new(&single(&format!("hang.py, {}", pid_file.display()), ""), &["a"], &[]);
    std::fs::write(project.path().join("hang.py"), HANG).expect("script");
    let mut run = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["exec_child", "--exact", "--nocapture"])
        .env(CHILD_DIR, project.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("child run");
    let grandchild = read_pid(&pid_file);
    assert!(alive(grandchild));
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let status = run.wait().expect("wait");
    assert!(!status.success());
    assert!(
        ends(grandchild),
        "the run was killed but the program's child {grandchild} lives on"
    );
}
