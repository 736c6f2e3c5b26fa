//! A run killed with SIGKILL at several points leaves only complete artifacts; each rerun
//! resumes, and nothing that had finished is computed again.
//!
//! The killed runs are this test binary re-executed (`crash_child`), so the counting test stages
//! run in a separate process that can be killed; it logs each execution to a file.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{PIPELINE, Project};
use lrf_graph::testing::{Counter, registry};
use lrf_graph::{ArtifactKey, RunOptions, Session};

const DIR: &str = "LRF_CRASH_TEST_DIR";

fn slow_pipeline() -> String {
    PIPELINE
        .replace("kind: test-source", "kind: test-source\n    params: {sleep_ms: 40}")
        .replace("params: {salt: 0}", "params: {salt: 0, sleep_ms: 40}")
        .replace(
            "params: {salt: 0, fail_on: []}",
            "params: {salt: 0, fail_on: [], sleep_ms: 40}",
        )
}

/// The killed process: runs the pipeline in $LRF_CRASH_TEST_DIR. A no-op in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR) else { return };
    let dir = std::path::PathBuf::from(dir);
    let counter = Counter::with_log(&dir.join("executions.log"));
    let session = Session::open(&dir.join("pipeline.yaml"), &registry(&counter)).expect("session");
    session
        .run(RunOptions {
            workers: 2,
            ..RunOptions::default()
        })
        .expect("run");
}

/// The key of every (stage, scene) the child logged.
fn logged_keys(session: &Session, log: &std::path::Path) -> Vec<ArtifactKey> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            let (stage, scene) = line.split_once('\t').expect("stage<TAB>scene");
            let stage = session.pipeline.stage_index(stage).expect("known stage");
            let scene = session.plan.scenes.iter().position(|s| s.name == scene);
            session.plan.stages[stage].instance(scene).expect("planned").key
        })
        .collect()
}

#[test]
fn killed_runs_resume_and_never_recompute_finished_work() {
    let project = Project::new(&slow_pipeline(), &["t1", "t2", "t3"], &["e1", "e2", "e3"]);
    let log = project.path().join("executions.log");
    let session = Session::open(&project.pipeline_file(), &registry(&Counter::new())).expect("session");
    let all: BTreeSet<ArtifactKey> = session.plan.keys().collect();
    let mut finished: BTreeSet<ArtifactKey> = BTreeSet::new();
    let mut interrupted = 0;
    // Kill points: as soon as the store holds this many artifacts (robust to a slow machine).
    for kill_at in [1, 6, 12, 17] {
        let _ = std::fs::remove_file(&log);
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(DIR, project.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the child run");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while session.store.keys().expect("keys").len() < kill_at && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");

        let recomputed: Vec<_> = logged_keys(&session, &log)
            .into_iter()
            .filter(|k| finished.contains(k))
            .collect();
        assert_eq!(
            recomputed,
            vec![],
            "killed at {kill_at} artifacts: finished artifacts were computed again"
        );
        let stored: BTreeSet<_> = session.store.keys().expect("keys").into_iter().collect();
        for key in &stored {
            session
                .store
                .verify(key)
                .unwrap_or_else(|e| panic!("killed at {kill_at} artifacts: {e}"));
        }
        assert!(stored.is_superset(&finished), "artifacts never disappear");
        eprintln!(
            "killed after {kill_at} artifacts: {} of {} artifacts stored",
            stored.len(),
            all.len()
        );
        interrupted += usize::from(stored.len() < all.len());
        finished = stored;
    }
    assert!(
        !finished.is_empty(),
        "the children got some work done before being killed"
    );
    assert!(interrupted >= 3, "at least three kills landed mid-run");

    // A complete rerun computes exactly what is still missing, and then everything verifies.
    let counter = Counter::new();
    let session = Session::open(&project.pipeline_file(), &registry(&counter)).expect("session");
    let report = session
        .run(RunOptions {
            workers: 2,
            ..RunOptions::default()
        })
        .expect("run");
    assert_eq!(report.failed(), 0, "{}", report.summary());
    let computed: BTreeSet<_> = report
        .outcomes
        .iter()
        .filter(|o| o.status == lrf_graph::Status::Computed)
        .map(|o| o.key)
        .collect();
    assert!(computed.is_disjoint(&finished));
    assert_eq!(computed.len() + finished.intersection(&all).count(), all.len());
    for key in &all {
        session.store.verify(key).expect("verifies");
    }
    let gc = session.gc(lrf_graph::GcOptions::default()).expect("gc");
    assert!(gc.removed.is_empty(), "every stored artifact belongs to the pipeline");
}
