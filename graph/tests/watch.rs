//! `watch`: scene folders added and removed while watching flow through the pipeline.

mod common;

use std::time::{Duration, Instant};

use common::{PIPELINE, Project, runs};
use lrf_graph::RunOptions;
use lrf_graph::testing::registry;
use lrf_graph::watch::{Round, SceneChanges, watch};

#[test]
fn added_and_removed_scenes_flow_through_while_watching() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    let registry = registry(&project.counter);
    let started = Instant::now();
    let mut rounds = 0;
    let mut changes: Vec<SceneChanges> = Vec::new();
    let mut executed = Vec::new();
    watch(
        &project.pipeline_file(),
        &registry,
        Duration::from_millis(20),
        |_| RunOptions::default(),
        |round| {
            if let Some(round) = round {
                match round {
                    Round::Ran { changes: c, report, .. } => {
                        assert_eq!(report.failed(), 0, "{}", report.summary());
                        changes.push(c);
                        executed.push(project.counter.runs());
                        project.counter.clear();
                    }
                    Round::Invalid(error) => panic!("{error}"),
                }
                rounds += 1;
                match rounds {
                    1 => project.add_scene("eval", "e2"),
                    2 => std::fs::remove_dir_all(project.path().join("scenes/train/t1")).expect("remove a scene"),
                    _ => {}
                }
            }
            rounds < 3 && started.elapsed() < Duration::from_secs(30)
        },
    );
    assert_eq!(rounds, 3, "three rounds ran before the deadline");
    assert_eq!(changes[0].added, ["e1", "t1"]);
    assert_eq!(executed[0].len(), 2 * 3 + 2);
    assert_eq!(changes[1].added, ["e2"]);
    assert_eq!(
        executed[1],
        runs(&[
            ("ingest", Some("e2")),
            ("features", Some("e2")),
            ("fit", Some("e2")),
            ("summary", None)
        ])
    );
    assert_eq!(changes[2].removed, ["t1"]);
    // Without t1 the train-only finetune has no scene: it and everything after it re-run.
    assert_eq!(
        executed[2],
        runs(&[
            ("finetune", None),
            ("fit", Some("e1")),
            ("fit", Some("e2")),
            ("summary", None)
        ])
    );
}
