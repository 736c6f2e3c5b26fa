//! Damaged artifacts are never reused silently: files missing or cut short are recomputed by any run;
//! flipped bytes are found by `verify`, and recomputed by `run --verify`.

mod common;

use common::{PIPELINE, Project, runs};
use lrf_graph::testing::registry;
use lrf_graph::{ArtifactKey, RunOptions, Session};

/// The stored artifact of `stage` on `scene`, and its output file.
fn artifact(project: &Project, stage: &str, scene: &str) -> (ArtifactKey, std::path::PathBuf) {
    let (report, _) = project.run(1);
    let outcome = report
        .outcomes
        .iter()
        .find(|o| o.stage == stage && o.scene.as_deref() == Some(scene))
        .expect("outcome");
    let (_, _, store) = project.plan();
    (outcome.key, store.path(&outcome.key).join("data"))
}

#[test]
fn an_artifact_with_a_missing_or_truncated_file_is_computed_again() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(2);
    let (_, file) = artifact(&project, "features", "e1");
    let original = std::fs::read(&file).expect("artifact file");

    std::fs::remove_file(&file).expect("delete");
    let (report, executed) = project.run(2);
    assert_eq!(executed, runs(&[("features", Some("e1"))]), "{}", report.summary());
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(std::fs::read(&file).expect("recomputed"), original);

    std::fs::write(&file, &original[..original.len() / 2]).expect("truncate");
    let (_, executed) = project.run(2);
    assert_eq!(executed, runs(&[("features", Some("e1"))]));
    assert_eq!(std::fs::read(&file).expect("recomputed"), original);
}

#[test]
fn flipped_bytes_are_found_by_verify_and_by_run_verify() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(2);
    let (key, file) = artifact(&project, "features", "e1");
    let mut bytes = std::fs::read(&file).expect("artifact file");
    bytes[0] ^= 0x20;
    std::fs::write(&file, &bytes).expect("flip");

    // Same size: a plain run cannot tell, and reuses it.
    let (_, executed) = project.run(2);
    assert_eq!(executed, vec![]);

    let session = Session::open(&project.pipeline_file(), &registry(&project.counter)).expect("session");
    let found = session.verify(false, |_, _| {}).expect("verify");
    assert_eq!(found.damaged.len(), 1, "{found:?}");
    assert!(
        found.damaged[0].contains("features on e1") && found.damaged[0].contains("data has other content"),
        "{found:?}"
    );
    assert!(session.store.contains(&key), "verify without repair removes nothing");

    // run --verify computes it again; what reads it keeps its key, so it is reused.
    let (report, executed) = project.run_with(RunOptions {
        workers: 2,
        verify: true,
        ..RunOptions::default()
    });
    assert_eq!(executed, runs(&[("features", Some("e1"))]), "{}", report.summary());
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(session.verify(false, |_, _| {}).expect("verify").damaged.is_empty());
}

#[test]
fn verify_repair_removes_what_is_damaged() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(2);
    let (key, file) = artifact(&project, "fit", "t1");
    std::fs::write(&file, b"other bytes").expect("overwrite");
    let session = Session::open(&project.pipeline_file(), &registry(&project.counter)).expect("session");
    let repaired = session.verify(true, |_, _| {}).expect("verify");
    assert_eq!((repaired.damaged.len(), repaired.removed), (1, 1), "{repaired:?}");
    assert!(!session.store.contains(&key));
    let (_, executed) = project.run(2);
    assert_eq!(executed, runs(&[("fit", Some("t1"))]));
}
