//! `watch`: scene folders added and removed while watching flow through the differential scene
//! collection; each round's change set names what it fires, and the run computes exactly that
//! (plus what is downstream of a re-fired global stage).

mod common;

use std::time::{Duration, Instant};

use common::{PIPELINE, Project, runs};
use lrf_graph::RunOptions;
use lrf_graph::testing::registry;
use lrf_graph::watch::{Round, SceneChanges, watch};

/// A round as a test sees it: its change set and the executions it caused.
type Observed = (SceneChanges, Vec<(String, Option<String>)>);

/// Per-scene ingest over every scene, a global finetune over train scenes and a global summary
/// over all (salted apart: with equal inputs their keys would be equal): no per-scene stage
/// reads a global one, so a removal re-runs globals only.
const GLOBALS_LAST: &str = r#"
pipeline: test
work_dir: work
scenes:
  - {glob: "scenes/train/*", role: train}
  - {glob: "scenes/eval/*", role: eval}
stages:
  - id: ingest
    kind: test-source
    inputs: {scene: scenes}
  - id: finetune
    kind: test-reduce
    roles: [train]
    inputs: {items: ingest}
    params: {salt: 2}
  - id: summary
    kind: test-reduce
    inputs: {items: ingest}
"#;

/// Watches `project` for `count` rounds that ran, calling `after(n)` once round `n` (from 1) has
/// been observed; returns each round's change set and executions.
fn watch_rounds(project: &Project, count: usize, mut after: impl FnMut(usize)) -> Vec<Observed> {
    let registry = registry(&project.counter);
    let started = Instant::now();
    let mut rounds = Vec::new();
    watch(
        &project.pipeline_file(),
        &registry,
        Duration::from_millis(20),
        |_| RunOptions::default(),
        |round| {
            match round {
                Some(Round::Ran { changes, report, .. }) => {
                    assert_eq!(report.failed(), 0, "{}", report.summary());
                    rounds.push((changes, project.counter.runs()));
                    project.counter.clear();
                    after(rounds.len());
                }
                Some(Round::Invalid(error)) => panic!("{error}"),
                None => {}
            }
            rounds.len() < count && started.elapsed() < Duration::from_secs(30)
        },
    );
    assert_eq!(rounds.len(), count, "{count} rounds ran before the deadline");
    rounds
}

/// Adds eval scene e2 after the first round and removes train scene t1 after the second.
fn add_then_remove(project: &Project) -> Vec<Observed> {
    watch_rounds(project, 3, |round| match round {
        1 => project.add_scene("eval", "e2"),
        2 => std::fs::remove_dir_all(project.path().join("scenes/train/t1")).expect("remove a scene"),
        _ => {}
    })
}

#[test]
fn added_and_removed_scenes_flow_through_while_watching() {
    // The train folder empties in round 3: a watched glob that may do so says `allow_empty`.
    let pipeline = PIPELINE.replace("role: train}", "role: train, allow_empty: true}");
    let project = Project::new(&pipeline, &["t1"], &["e1"]);
    let rounds = add_then_remove(&project);
    let (first, executed) = &rounds[0];
    assert_eq!(first.added, ["e1", "t1"]);
    assert_eq!(first.fired.len(), 2 * 3 + 2);
    assert_eq!(executed, &first.fired);

    let (added, executed) = &rounds[1];
    assert_eq!(added.added, ["e2"]);
    let e2 = runs(&[
        ("features", Some("e2")),
        ("fit", Some("e2")),
        ("ingest", Some("e2")),
        ("summary", None),
    ]);
    assert_eq!(
        added.fired, e2,
        "e2's per-scene instances and the global stage over eval"
    );
    assert!(added.retracted.is_empty());
    assert_eq!(executed, &e2, "exactly the fired instances");

    let (removed, executed) = &rounds[2];
    assert_eq!(removed.removed, ["t1"]);
    assert_eq!(removed.fired, runs(&[("finetune", None), ("summary", None)]));
    assert_eq!(
        removed.retracted,
        runs(&[("features", Some("t1")), ("fit", Some("t1")), ("ingest", Some("t1"))])
    );
    // The re-fired finetune changes the model every fit reads: fit re-runs downstream of it.
    assert_eq!(
        executed,
        &runs(&[
            ("finetune", None),
            ("fit", Some("e1")),
            ("fit", Some("e2")),
            ("summary", None)
        ])
    );
}

#[test]
fn a_removed_scene_re_runs_only_the_global_stages_that_used_it() {
    let project = Project::new(GLOBALS_LAST, &["t1", "t2"], &["e1"]);
    let rounds = add_then_remove(&project);
    assert_eq!(rounds[0].1, rounds[0].0.fired);

    let (added, executed) = &rounds[1];
    assert_eq!(added.fired, runs(&[("ingest", Some("e2")), ("summary", None)]));
    assert_eq!(
        executed, &added.fired,
        "finetune reads train scenes only: not fired, not run"
    );

    let (removed, executed) = &rounds[2];
    assert_eq!(removed.removed, ["t1"]);
    assert_eq!(removed.fired, runs(&[("finetune", None), ("summary", None)]));
    assert_eq!(removed.retracted, runs(&[("ingest", Some("t1"))]));
    assert_eq!(executed, &removed.fired, "the globals that used t1, nothing per-scene");
}

#[test]
fn an_edited_scene_is_changed_and_re_fires_its_instances() {
    let project = Project::new(GLOBALS_LAST, &["t1"], &["e1"]);
    let rounds = watch_rounds(&project, 2, |_| {
        let image = project.path().join("scenes/eval/e1/images/0.txt");
        std::fs::write(image, "new pixels").expect("edit a scene");
    });
    let (edited, executed) = &rounds[1];
    assert_eq!(edited.changed, ["e1"]);
    assert!(edited.added.is_empty() && edited.removed.is_empty() && edited.retracted.is_empty());
    assert_eq!(edited.fired, runs(&[("ingest", Some("e1")), ("summary", None)]));
    assert_eq!(executed, &edited.fired);
}

#[test]
fn a_pipeline_edit_flows_through_roles_and_runs_on_a_parameter_change() {
    let project = Project::new(GLOBALS_LAST, &["t1"], &["e1"]);
    let all_roles = GLOBALS_LAST.replace("    roles: [train]\n", "");
    let rounds = watch_rounds(&project, 3, |round| match round {
        1 => project.write_pipeline(&all_roles),
        2 => project.write_pipeline(&format!("{all_roles}    params: {{salt: 1}}\n")),
        _ => {}
    });
    // finetune now collects eval scenes too: its scene set changed, so differential fires it.
    let (roles, executed) = &rounds[1];
    assert_eq!(roles.fired, runs(&[("finetune", None)]));
    assert_eq!(executed, &roles.fired);
    // A parameter is no scene-collection change: the edited file runs the round, the planner's
    // keys pick the stage.
    let (salt, executed) = &rounds[2];
    assert_eq!(salt, &SceneChanges::default());
    assert_eq!(executed, &runs(&[("summary", None)]));
}
