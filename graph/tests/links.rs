//! Symbolic links in the scenes folder: links to folders are followed and keyed by what they hold; a
//! loop or a broken link leaves out its own scene only.

mod common;

use std::os::unix::fs::symlink;

use common::{PIPELINE, Project};
use lrf_graph::Session;
use lrf_graph::testing::registry;

#[test]
fn a_linked_images_folder_is_part_of_its_scene() {
    let project = Project::new(PIPELINE, &["t1"], &["e1"]);
    let elsewhere = project.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("1.txt"), "pixels").unwrap();
    symlink(&elsewhere, project.path().join("scenes/eval/e1/linked")).unwrap();
    let open = || Session::open(&project.pipeline_file(), &registry(&project.counter)).expect("session");
    let before = open();
    assert!(before.rejected.is_empty(), "{:?}", before.rejected);
    let (report, _) = project.run(2);
    assert_eq!(report.failed(), 0, "{}", report.summary());

    std::fs::write(elsewhere.join("1.txt"), "other pixels").unwrap();
    let after = open();
    let key = |s: &Session| s.plan.scenes.iter().find(|s| s.name == "e1").map(|s| s.key);
    assert_ne!(key(&before), key(&after), "an edit behind the link changes the scene");
}

#[test]
fn a_link_loop_or_a_broken_link_leaves_out_only_its_scene() {
    let project = Project::new(PIPELINE, &["t1", "t2"], &["e1"]);
    let scenes = project.path().join("scenes");
    // `dot` matches the glob and links back to the folder holding it.
    symlink(".", scenes.join("eval/dot")).unwrap();
    symlink(project.path().join("nowhere"), scenes.join("train/t2/images/gone")).unwrap();
    let session = Session::open(&project.pipeline_file(), &registry(&project.counter)).expect("session");
    let names: Vec<&str> = session.plan.scenes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["e1", "t1"]);
    let reasons: Vec<String> = session.rejected.iter().map(|r| r.to_string()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("eval/dot is left out") && r.contains("(a loop); remove the link")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("train/t2 is left out") && r.contains("images/gone: a broken symbolic link")),
        "{reasons:?}"
    );
    let (report, executed) = project.run(2);
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(executed.contains(&("fit".into(), Some("e1".into()))), "{executed:?}");
}
