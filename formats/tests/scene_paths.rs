//! Image names that would read outside the scene folder, or hidden files in it, are refused: scene keys
//! hash the folder without hidden entries, so such files would be read without ever being keyed.

use std::path::Path;

use lrf_formats::image::{ImageF32, write_png};
use lrf_formats::scene::{Scene, SceneOptions};

/// A one-view scene in `dir` whose image entry is `name` (the file is written where the name points).
fn scene_with_image_name(dir: &Path, name: &str) {
    let sparse = dir.join("scene/sparse/0");
    std::fs::create_dir_all(&sparse).unwrap();
    std::fs::create_dir_all(dir.join("scene/images")).unwrap();
    std::fs::write(sparse.join("cameras.txt"), "1 PINHOLE 8 8 10 10 4 4\n").unwrap();
    std::fs::write(sparse.join("images.txt"), format!("1 1 0 0 0 0 0 0 1 {name}\n\n")).unwrap();
    std::fs::write(sparse.join("points3D.txt"), "").unwrap();
    let image = ImageF32 {
        channels: 3,
        width: 8,
        height: 8,
        data: vec![0.5; 3 * 64],
    };
    let path = dir.join("scene/images").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_png(&path, &image).unwrap();
}

#[test]
fn image_names_outside_the_folder_or_hidden_are_refused() {
    for name in ["../outside.png", ".hidden.png", "sub/.hidden/a.png", "./a.png"] {
        let dir = tempfile::tempdir().unwrap();
        scene_with_image_name(dir.path(), name);
        let error = Scene::load(&dir.path().join("scene"), &SceneOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{name:?} was accepted"))
            .to_string();
        assert!(error.contains("images.txt") && error.contains(name), "{error}");
        assert!(
            error.contains("must be a relative path inside the images folder"),
            "{error}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    scene_with_image_name(dir.path(), "sub/a.png");
    let scene = Scene::load(&dir.path().join("scene"), &SceneOptions::default()).expect("a name in a subfolder");
    assert_eq!(scene.views.len(), 1);
}
