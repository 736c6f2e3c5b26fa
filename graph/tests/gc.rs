//! `gc` keeps a corpus's work safe: a pipeline that finds no scene, or references nothing stored, does not
//! empty the store without `force`; a running run's work in progress is never removed.

mod common;

use common::{PIPELINE, Project};
use lrf_graph::testing::registry;
use lrf_graph::{GcOptions, Session};

fn session(project: &Project) -> Session {
    Session::open(&project.pipeline_file(), &registry(&project.counter)).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn a_glob_that_matches_nothing_does_not_empty_the_store() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(1);
    let stored = session(&project).store.keys().unwrap().len();
    assert_eq!(stored, 8);
    let typo = PIPELINE
        .replace("scenes/train/*", "scenes/trian/*")
        .replace("scenes/eval/*", "scenes/evl/*");
    project.write_pipeline(&typo);
    // A glob that matches nothing is an error before gc can do anything.
    let error = Session::open(&project.pipeline_file(), &registry(&project.counter))
        .err()
        .expect("empty glob");
    assert!(format!("{error:#}").contains("matches no scene folder"), "{error:#}");
    // Allowed to be empty, the pipeline finds no scene, and gc still refuses to empty the store.
    project.write_pipeline(
        &typo
            .replace("role: train}", "role: train, allow_empty: true}")
            .replace("role: eval}", "role: eval, allow_empty: true}"),
    );
    let session = session(&project);
    let error = format!("{:#}", session.gc(GcOptions::default()).unwrap_err());
    assert!(error.contains("the pipeline finds no scene"), "{error}");
    assert!(error.contains("--force"), "{error}");
    assert_eq!(
        session.store.keys().unwrap().len(),
        stored,
        "gc removed artifacts while refusing"
    );

    let report = session.gc(GcOptions { force: true }).unwrap();
    assert_eq!(report.removed.len(), stored);
    assert!(session.store.keys().unwrap().is_empty());
}

#[test]
fn a_pipeline_that_references_nothing_stored_does_not_empty_the_store() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(1);
    // Every stage's parameters change, so no stored key is referenced any more.
    project.write_pipeline(&PIPELINE.replace("kind: test-source", "kind: test-source\n    params: {salt: 9}"));
    let session = session(&project);
    let unreferenced = session.unreferenced().unwrap();
    assert_eq!(unreferenced.len(), 8);
    let ingest = unreferenced
        .iter()
        .find(|a| a.stage.as_deref() == Some("ingest"))
        .unwrap();
    assert!(ingest.scene.is_some() && ingest.bytes > 0, "{ingest:?}");
    let error = format!("{:#}", session.gc(GcOptions::default()).unwrap_err());
    assert!(error.contains("references none of the 8 artifact(s)"), "{error}");
    assert_eq!(session.store.keys().unwrap().len(), 8);
}

#[test]
fn gc_refuses_while_a_run_holds_the_store() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(1);
    let session = session(&project);
    let work_in_progress = session
        .store
        .begin(lrf_graph::ArtifactKey::parse(&"ab".repeat(32)).unwrap())
        .unwrap();
    let lock = session.store.lock_for_run().unwrap();
    let error = session.gc(GcOptions { force: true }).unwrap_err().to_string();
    assert!(error.contains("a run is using the store"), "{error}");
    assert!(
        work_in_progress.dir.is_dir(),
        "a running run's temporary folder was removed"
    );
    drop(lock);
    let report = session.gc(GcOptions::default()).unwrap();
    assert_eq!(report.temporaries, 1, "once the run is over, its leftovers go");
}
