//! What a run computes: everything once, then only what changed.

mod common;

use common::{PIPELINE, Project, runs};
use lrf_graph::{Session, Status};

#[test]
fn first_run_computes_every_instance_once_and_a_rerun_nothing() {
    let project = Project::new(PIPELINE, &["t1", "t2"], &["e1"]);
    let (report, executed) = project.run(2);
    // 3 scenes × (ingest, features, fit) + finetune + summary
    assert_eq!(executed.len(), 11, "{executed:?}");
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(executed.contains(&("finetune".into(), None)));

    let (report, executed) = project.run(2);
    assert_eq!(executed, vec![], "a rerun with nothing changed computes nothing");
    assert!(
        report.outcomes.iter().all(|o| o.status == Status::Cached),
        "{}",
        report.summary()
    );
    assert_eq!(report.outcomes.len(), 11);
}

#[test]
fn adding_an_eval_scene_computes_only_its_work_and_the_global_stages_over_it() {
    let project = Project::new(PIPELINE, &["t1", "t2"], &["e1"]);
    project.run(2);
    project.add_scene("eval", "e2");
    let (_, executed) = project.run(2);
    let expected = runs(&[
        ("ingest", Some("e2")),
        ("features", Some("e2")),
        ("fit", Some("e2")),
        // `summary` collects every scene, so a new scene re-runs it; `finetune` (train only) does not.
        ("summary", None),
    ]);
    assert_eq!(executed, expected);
}

#[test]
fn adding_a_train_scene_recomputes_the_finetune_and_everything_after_it() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(1);
    project.add_scene("train", "t2");
    let (_, executed) = project.run(2);
    let expected = runs(&[
        ("ingest", Some("t2")),
        ("features", Some("t2")),
        ("finetune", None),
        ("fit", Some("t1")),
        ("fit", Some("t2")),
        ("fit", Some("e1")),
        ("summary", None),
    ]);
    assert_eq!(executed, expected);
}

#[test]
fn changing_a_parameter_recomputes_that_stage_and_its_dependants_only() {
    let project = Project::new(PIPELINE, &["t1", "t2"], &["e1"]);
    project.run(2);
    project.write_pipeline(&PIPELINE.replace("params: {salt: 0, fail_on: []}", "params: {salt: 7, fail_on: []}"));
    let (_, executed) = project.run(2);
    let expected = runs(&[
        ("fit", Some("t1")),
        ("fit", Some("t2")),
        ("fit", Some("e1")),
        ("summary", None),
    ]);
    assert_eq!(executed, expected);

    // An upstream parameter reaches everything downstream of it, and nothing upstream.
    project.write_pipeline(&PIPELINE.replace("params: {salt: 0}", "params: {salt: 3}"));
    let (_, executed) = project.run(2);
    assert!(!executed.iter().any(|(stage, _)| stage == "ingest"), "{executed:?}");
    assert_eq!(executed.len(), 3 + 1 + 3 + 1, "{executed:?}");
}

#[test]
fn writing_a_default_parameter_explicitly_changes_nothing() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(1);
    project.write_pipeline(&PIPELINE.replace(
        "kind: test-source",
        "kind: test-source\n    params: {salt: 0, sleep_ms: 0}",
    ));
    let (_, executed) = project.run(1);
    assert_eq!(executed, vec![]);
}

#[test]
fn a_summary_that_accepts_partial_inputs_covers_the_scenes_that_succeeded_and_names_the_rest() {
    let project = Project::new(PIPELINE, &["t1", "t2"], &["e1", "e2"]);
    let partial = PIPELINE.replace("fail_on: []", "fail_on: [e1]").replace(
        "inputs: {items: fit}",
        "inputs: {items: fit}\n    params: {partial: true}",
    );
    project.write_pipeline(&partial);
    let (report, executed) = project.run(2);
    assert!(executed.contains(&("summary".into(), None)), "{executed:?}");
    let summary = report
        .outcomes
        .iter()
        .find(|o| o.stage == "summary")
        .expect("summary outcome");
    assert_eq!(summary.status, Status::Computed, "{}", report.summary());
    assert_eq!(summary.missing, vec!["fit on e1".to_string()]);
    assert!(
        report.summary().contains("partial summary: without fit on e1"),
        "{}",
        report.summary()
    );
    // Only the failed fit counts against the run.
    assert_eq!(report.failed(), 1, "{}", report.summary());
    let (_, _, store) = project.plan();
    let table = std::fs::read_to_string(store.path(&summary.key).join("model")).expect("summary output");
    assert!(table.contains("missing items[e1]: fit on e1"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("items[e2]")) && !table.lines().any(|l| l.starts_with("items[e1]")),
        "{table}"
    );

    // The same failure again reuses the partial table.
    let (report, executed) = project.run(2);
    assert!(!executed.contains(&("summary".into(), None)), "{executed:?}");
    let again = report
        .outcomes
        .iter()
        .find(|o| o.stage == "summary")
        .expect("summary outcome");
    assert_eq!((again.key, &again.status), (summary.key, &Status::Cached));

    // Once the scene is fixed, the complete table is computed under its own key.
    project.write_pipeline(&partial.replace("fail_on: [e1]", "fail_on: []"));
    let (report, executed) = project.run(2);
    assert!(executed.contains(&("summary".into(), None)), "{executed:?}");
    let complete = report
        .outcomes
        .iter()
        .find(|o| o.stage == "summary")
        .expect("summary outcome");
    assert!(complete.missing.is_empty());
    assert_ne!(
        complete.key, summary.key,
        "a partial table must not stand in for the complete one"
    );
    assert_eq!(report.failed(), 0, "{}", report.summary());
}

#[test]
fn a_failing_scene_is_reported_and_the_other_scenes_go_on() {
    let project = Project::new(PIPELINE, &["t1", "t2"], &["e1", "e2"]);
    project.write_pipeline(&PIPELINE.replace("fail_on: []", "fail_on: [e1]"));
    let (report, executed) = project.run(3);
    for scene in ["t1", "t2", "e2"] {
        assert!(executed.contains(&("fit".into(), Some(scene.into()))), "{executed:?}");
    }
    let failed: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| matches!(o.status, Status::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].stage.as_str(), failed[0].scene.as_deref()),
        ("fit", Some("e1"))
    );
    // The summary needs every scene's fit, so it is skipped, naming the failed input.
    let summary = report
        .outcomes
        .iter()
        .find(|o| o.stage == "summary")
        .expect("summary outcome");
    assert!(
        matches!(&summary.status, Status::Skipped { reason } if reason.contains("fit on e1")),
        "{summary:?}"
    );
    assert_eq!(report.failed(), 2);
    assert!(
        report
            .summary()
            .contains("FAILED fit on e1: test stage asked to fail on scene e1"),
        "{}",
        report.summary()
    );

    // Failures are not cached: a rerun retries exactly the failed instance, reuses the rest.
    let (report, executed) = project.run(3);
    assert_eq!(executed, runs(&[("fit", Some("e1"))]));
    assert_eq!(report.failed(), 2);
}

#[test]
fn worker_count_does_not_change_keys_or_artifacts() {
    let one = Project::new(PIPELINE, &["t1", "t2", "t3"], &["e1", "e2"]);
    let four = Project::new(PIPELINE, &["t1", "t2", "t3"], &["e1", "e2"]);
    one.run(1);
    four.run(4);
    let (_, _, store1) = one.plan();
    let (_, _, store4) = four.plan();
    let keys = store1.keys().expect("keys");
    assert_eq!(keys, store4.keys().expect("keys"));
    for key in keys {
        let files1 = store1.manifest(&key).expect("manifest").files;
        assert_eq!(files1, store4.manifest(&key).expect("manifest").files);
        store1.verify(&key).expect("verifies");
    }
}

#[test]
fn plan_counts_cached_and_missing_per_stage_without_running() {
    let project = Project::new(PIPELINE, &["t1", "t2"], &["e1"]);
    let (pipeline, plan, store) = project.plan();
    let text = plan.summary(&pipeline, &store);
    assert!(text.contains("total: 0 cached, 11 to compute"), "{text}");
    assert_eq!(project.counter.runs(), vec![]);
    project.run(1);
    project.add_scene("eval", "e2");
    let (pipeline, plan, store) = project.plan();
    let text = plan.summary(&pipeline, &store);
    // The old summary (over 3 scenes) is no longer part of the plan.
    assert!(text.contains("total: 10 cached, 4 to compute"), "{text}");
}

#[test]
fn a_pinned_global_stage_keeps_its_artifact_when_train_scenes_change() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(1);
    let (_, plan, _) = project.plan();
    let finetune = plan.stages[2].instances[0].key.hex();
    project.write_pipeline(&PIPELINE.replace(
        "roles: [train]",
        &format!("roles: [train]\n    pin: {}", &finetune[..12]),
    ));
    project.add_scene("train", "t2");
    let (_, executed) = project.run(2);
    let expected = runs(&[
        ("ingest", Some("t2")),
        ("features", Some("t2")),
        ("fit", Some("t2")),
        ("summary", None),
    ]);
    assert_eq!(executed, expected, "fit on t1/e1 reuse the pinned model");

    // A pin must name an artifact of the stage's own kind.
    let (_, plan, _) = project.plan();
    let ingest = plan.stages[0].instances[0].key.hex();
    project.write_pipeline(&PIPELINE.replace("roles: [train]", &format!("roles: [train]\n    pin: {}", &ingest[..12])));
    let error = lrf_graph::Session::open(
        &project.pipeline_file(),
        &lrf_graph::testing::registry(&project.counter),
    )
    .err()
    .expect("a pin of the wrong kind");
    assert!(
        format!("{error}").contains("is an artifact of kind `test-source` (stage `ingest`), not `test-reduce`"),
        "{error}"
    );
}

#[test]
fn gc_removes_unreferenced_artifacts_and_keeps_the_current_ones() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    project.run(1);
    project.write_pipeline(&PIPELINE.replace("params: {salt: 0, fail_on: []}", "params: {salt: 1, fail_on: []}"));
    project.run(1);
    let (_, plan, store) = project.plan();
    // 2 scenes × 3 per-scene stages + 2 global stages, plus the old fit × 2 and old summary.
    assert_eq!(store.keys().expect("keys").len(), 8 + 3);
    let keep = plan.keys().collect();
    let report = store.gc(&keep).expect("gc");
    assert_eq!(report.removed.len(), 3, "old fit × 2 and old summary");
    assert_eq!(store.keys().expect("keys").len(), 8);
    let (_, executed) = project.run(1);
    assert_eq!(executed, vec![]);
}

#[test]
fn per_scene_work_goes_on_while_a_global_stage_runs() {
    // `finetune` (global, worker 1) waits until `features` has run on all four scenes; `features` needs the
    // other global stage, `prepare` (worker 0), so it can only start after `finetune` has. This succeeds
    // only if workers hand instances to the job pool: run inline, `finetune` held worker 1, whose scenes'
    // `features` then never ran.
    let pipeline = r#"
pipeline: test
work_dir: work
scenes:
  - {glob: "scenes/train/*", role: train}
stages:
  - id: ingest
    kind: test-source
    inputs: {scene: scenes}
  - id: finetune
    kind: test-reduce
    inputs: {items: ingest}
    params: {await_stage: features, await_count: 4}
  - id: prepare
    kind: test-reduce
    inputs: {items: ingest}
    params: {sleep_ms: 200}
  - id: features
    kind: test-apply
    inputs: {data: ingest, model: prepare}
"#;
    let project = Project::new(pipeline, &["a", "b", "c", "d"], &[]);
    let (report, executed) = project.run(2);
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(executed.len(), 10, "{executed:?}");
}

#[test]
fn a_glob_that_matches_nothing_is_an_error_unless_it_allows_that() {
    // No eval scene: `scenes/eval/*` matches nothing.
    let project = Project::new(PIPELINE, &["t1"], &[]);
    let open = || {
        Session::open(
            &project.pipeline_file(),
            &lrf_graph::testing::registry(&project.counter),
        )
    };
    let error = format!("{:#}", open().err().expect("an empty glob"));
    assert!(
        error.contains("scenes/eval/*\" (role eval) matches no scene folder") && error.contains("allow_empty: true"),
        "{error}"
    );
    project.write_pipeline(&PIPELINE.replace(
        "{glob: \"scenes/eval/*\", role: eval}",
        "{glob: \"scenes/eval/*\", role: eval, allow_empty: true}",
    ));
    let session = open().expect("allowed");
    assert_eq!(session.plan.scenes.len(), 1);
}
