//! `kind: exec` stages: a Python program gets a JSON job and writes its declared outputs.
//! The interpreter is $LRF_PYTHON, default /work/main/.venv/bin/python.

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
