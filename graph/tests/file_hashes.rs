//! Opening a pipeline again reads only the scene files that changed (the file hash cache), and still sees
//! an edit that keeps a file's size and modification time; `rehash` reads everything.

mod common;

use common::{PIPELINE, Project};
use lrf_graph::testing::registry;
use lrf_graph::{OpenOptions, Session};

#[test]
fn an_edited_image_is_seen_through_the_cache_and_unchanged_ones_are_not_read() {
    let project = Project::new(PIPELINE, &["t1", "t2"], &["e1"]);
    let open = |rehash| {
        Session::open_with(
            &project.pipeline_file(),
            &registry(&project.counter),
            OpenOptions { rehash },
        )
        .expect("session")
    };
    let key = |s: &Session, name: &str| s.plan.scenes.iter().find(|s| s.name == name).map(|s| s.key).unwrap();
    let first = open(false);
    assert!(
        project.path().join("work/file-hashes.bin").is_file(),
        "the cache is written"
    );
    let again = open(false);
    for name in ["t1", "t2", "e1"] {
        assert_eq!(key(&first, name), key(&again, name));
    }
    // Same size, modification time put back: the status-change time still gives the edit away.
    let image = project.path().join("scenes/eval/e1/images/0.txt");
    let text = std::fs::read_to_string(&image).unwrap();
    let mtime = std::fs::metadata(&image).unwrap().modified().unwrap();
    std::fs::write(&image, text.to_uppercase()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let edited = open(false);
    assert_ne!(
        key(&first, "e1"),
        key(&edited, "e1"),
        "the edit changes the scene's key"
    );
    assert_eq!(key(&first, "t1"), key(&edited, "t1"));
    let rehashed = open(true);
    assert_eq!(
        key(&edited, "e1"),
        key(&rehashed, "e1"),
        "the cache agrees with reading every file"
    );
}
