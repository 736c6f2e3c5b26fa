//! Generated scenes checked against themselves, read back the way a consumer reads them: the
//! model through `ColmapModel::read`, cameras rebuilt independently from cameras.bin/images.bin,
//! images decoded from PNG, depth from the safetensors shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glam::{DVec2, DVec3};
use image::RgbImage;
use lrf_formats::Camera;
use lrf_formats::colmap::{CameraModel, ColmapModel};
use lrf_synth::{CameraPath, GeneratedScene, SynthError, SynthOptions, generate};

fn options(seed: u64, views: usize, width: u32, height: u32, points: usize) -> SynthOptions {
    SynthOptions {
        scenes: 1,
        views,
        width,
        height,
        seed,
        path: CameraPath::Orbit,
        points_per_scene: points,
        ..SynthOptions::default()
    }
}

fn run(out: &Path, options: &SynthOptions) -> Vec<GeneratedScene> {
    let start = Instant::now();
    let scenes = generate(out, options, |_| {}).expect("generation succeeds");
    eprintln!(
        "generated {} scene(s) {}x{} x{} views in {:.2?}",
        scenes.len(),
        options.width,
        options.height,
        options.views,
        start.elapsed()
    );
    scenes
}

/// Each image's camera, built from the written files only.
fn cameras(model: &ColmapModel) -> BTreeMap<u32, Camera> {
    model
        .images
        .iter()
        .map(|(&id, image)| {
            let camera = &model.cameras[&image.camera_id];
            assert_eq!(camera.model, CameraModel::Pinhole);
            let [fx, fy, cx, cy] = camera.params[..] else {
                panic!("PINHOLE has four parameters")
            };
            let (w, h) = (camera.width as u32, camera.height as u32);
            (id, Camera::from_colmap(image.qvec, image.tvec, fx, fy, cx, cy, w, h))
        })
        .collect()
}

fn read_depth(path: &Path) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let depth = tensors.tensor("depth").unwrap();
    assert_eq!(depth.dtype(), safetensors::Dtype::F32);
    let &[h, w] = depth.shape() else {
        panic!("depth is [H, W]")
    };
    let values = depth
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (h, w, values)
}

fn read_png(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

fn stem(name: &str) -> &str {
    name.strip_suffix(".png").unwrap()
}

/// Checks (a) exact keypoints, (b) point colours against pixels, (c) depth at pixel centres, on an
/// orbit scene, a forward-facing one and a room.
#[test]
fn written_model_agrees_with_images_and_depth() {
    let dir = tempfile::tempdir().unwrap();
    let options = SynthOptions {
        scenes: 3,
        path: CameraPath::Alternate,
        ..options(11, 8, 128, 96, 400)
    };
    let scenes = run(dir.path(), &options);
    let paths: Vec<CameraPath> = scenes.iter().map(|scene| scene.camera_path).collect();
    assert_eq!(paths, [CameraPath::Orbit, CameraPath::ForwardFacing, CameraPath::Room]);
    for scene in &scenes {
        let model = ColmapModel::read(&scene.path.join("sparse/0")).unwrap();
        assert_eq!(model.images.len(), 8);
        assert_eq!(model.points.len(), scene.points);
        assert!(
            scene.points >= 300,
            "{}: only {} of 400 points found",
            scene.name,
            scene.points
        );
        let cameras = cameras(&model);
        let mut images = BTreeMap::new();
        let mut depths = BTreeMap::new();
        for (&id, image) in &model.images {
            images.insert(id, read_png(&scene.path.join("images").join(&image.name)));
            let (h, w, depth) = read_depth(
                &scene
                    .path
                    .join("depth")
                    .join(format!("{}.safetensors", stem(&image.name))),
            );
            assert_eq!((w as u32, h as u32), (cameras[&id].width, cameras[&id].height));
            if scene.camera_path == CameraPath::Room {
                assert!(depth.iter().all(|d| d.is_finite()), "{}: a room shows sky", image.name);
            }
            depths.insert(id, depth);
        }

        // Keypoints are exactly the track observations.
        let keypoints: usize = model.images.values().map(|image| image.points2d.len()).sum();
        let observations: usize = model.points.values().map(|point| point.track.len()).sum();
        assert_eq!(keypoints, observations);
        assert_eq!(observations, scene.observations);
        for image in model.images.values() {
            assert!(
                image.points2d.iter().all(|p| p.point3d_id.is_some()),
                "{}: untracked keypoint",
                image.name
            );
        }

        let (mut color_checked, mut worst_color, mut depth_checked, mut worst_depth) = (0, 0, 0, 0.0f64);
        for point in model.points.values() {
            let xyz = DVec3::from_array(point.xyz);
            assert!(
                point.track.len() >= 2,
                "point {} has a track of {}",
                point.id,
                point.track.len()
            );
            for element in &point.track {
                let image = &model.images[&element.image_id];
                let keypoint = image.points2d[element.point2d_index as usize];
                assert_eq!(keypoint.point3d_id, Some(point.id));
                let camera = &cameras[&element.image_id];
                let (projected, z) = camera.project(xyz).expect("observed points are in front");
                // (a) The keypoint is the projection.
                let xy = DVec2::from_array(keypoint.xy);
                assert!(
                    (projected - xy).length() < 1e-6,
                    "point {} in {}: {projected} vs {xy}",
                    point.id,
                    image.name
                );
                assert!(camera.contains(xy));

                // (b) Where the pixel sees the point's surface, it shows the point's colour.
                let (w, h) = (camera.width as usize, camera.height as usize);
                let depth = &depths[&element.image_id];
                let (px, py) = (xy.x.floor() as usize, xy.y.floor() as usize);
                if ((depth[py * w + px] as f64 - z) / z).abs() <= 0.01 {
                    color_checked += 1;
                    let pixel = images[&element.image_id].get_pixel(px as u32, py as u32).0;
                    let diff = (0..3).map(|c| pixel[c].abs_diff(point.rgb[c])).max().unwrap();
                    worst_color = worst_color.max(diff);
                    assert!(
                        diff <= 3,
                        "point {} in {} at {xy}: rgb {:?} vs pixel {pixel:?}",
                        point.id,
                        image.name,
                        point.rgb
                    );
                }

                // (c) On the ground, 1/z is affine in the image, so bilinear interpolation of the
                // pixel-centre inverse depths at the keypoint must give the point's 1/z exactly.
                let (i0, j0) = ((xy.x - 0.5).floor(), (xy.y - 0.5).floor());
                if xyz.z.abs() > 1e-9 || i0 < 0.0 || j0 < 0.0 || i0 as usize + 1 >= w || j0 as usize + 1 >= h {
                    continue;
                }
                let (i0, j0) = (i0 as usize, j0 as usize);
                let corners = [(i0, j0), (i0 + 1, j0), (i0, j0 + 1), (i0 + 1, j0 + 1)];
                // The corner pixels see the ground if their depth is (nearly) where their
                // pixel-centre rays meet the plane z = 0; loose, so that a renderer off by half a
                // pixel still gets here and fails below.
                let on_ground = corners.iter().all(|&(i, j)| {
                    let ray = camera.ray_direction(DVec2::new(i as f64 + 0.5, j as f64 + 0.5));
                    let center = camera.center();
                    let ground = camera.to_camera(center - ray * center.z / ray.z).z;
                    ray.z < 0.0 && ((depth[j * w + i] as f64 - ground) / ground).abs() < 0.03
                });
                if !on_ground {
                    continue;
                }
                let (fx, fy) = (xy.x - 0.5 - i0 as f64, xy.y - 0.5 - j0 as f64);
                let inverse = |i: usize, j: usize| 1.0 / depth[j * w + i] as f64;
                let top = inverse(i0, j0) * (1.0 - fx) + inverse(i0 + 1, j0) * fx;
                let bottom = inverse(i0, j0 + 1) * (1.0 - fx) + inverse(i0 + 1, j0 + 1) * fx;
                let interpolated = top * (1.0 - fy) + bottom * fy;
                let relative = (interpolated * z - 1.0).abs();
                worst_depth = worst_depth.max(relative);
                depth_checked += 1;
                assert!(
                    relative < 1e-4,
                    "point {} in {} at {xy}: 1/z {} vs {interpolated}",
                    point.id,
                    image.name,
                    1.0 / z
                );
            }
        }
        eprintln!(
            "{} ({:?}): {} points, {observations} observations; colour checked on {color_checked} \
             (worst {worst_color}/255); ground inverse depth checked on {depth_checked} (worst {worst_depth:.1e})",
            scene.name, scene.camera_path, scene.points
        );
        assert!(
            color_checked * 5 >= observations * 4,
            "{}: colour checked on {color_checked} of {observations}",
            scene.name
        );
        // Rooms show their floor in the lower part of the views only.
        let enough = if scene.camera_path == CameraPath::Room { 25 } else { 50 };
        assert!(
            depth_checked >= enough,
            "{}: inverse depth checked on only {depth_checked}",
            scene.name
        );
    }
}

fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    found
}

/// (d) Same seed, byte-identical files whatever the number of threads, or the first index generated;
/// another seed, other files.
#[test]
fn same_seed_gives_identical_files_and_another_seed_differs() {
    let dirs = [(); 4].map(|_| tempfile::tempdir().unwrap());
    let pool = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let small = |seed| SynthOptions {
        scenes: 3,
        path: CameraPath::Alternate,
        ..options(seed, 3, 32, 24, 60)
    };
    pool(1).install(|| run(dirs[0].path(), &small(5)));
    pool(3).install(|| run(dirs[1].path(), &small(5)));
    pool(3).install(|| run(dirs[2].path(), &small(6)));
    let later = SynthOptions {
        scenes: 2,
        first: 1,
        ..small(5)
    };
    pool(1).install(|| run(dirs[3].path(), &later));
    let [a, b, c, d] = dirs.each_ref().map(|d| files(d.path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(
        a.len(),
        3 * (3 * 5 + 3 + 1),
        "images, 3 downsamples, depth per view; model; synth.json"
    );
    // Every file of `some` has the bytes of the same file in `all`.
    let same_bytes = |some: &BTreeMap<PathBuf, Vec<u8>>, all: &BTreeMap<PathBuf, Vec<u8>>, between: &str| {
        for (path, bytes) in some {
            assert!(bytes == &all[path], "{} differs between {between}", path.display());
        }
    };
    same_bytes(&a, &b, "runs with the same seed");
    for path in [
        Path::new("scene000/images/00000.png"),
        Path::new("scene001/sparse/0/points3D.bin"),
        Path::new("scene002/images/00002.png"),
    ] {
        assert_ne!(a[path], c[path], "{} is the same for seeds 5 and 6", path.display());
    }
    let from_scene_1: Vec<_> = a.keys().filter(|path| !path.starts_with("scene000")).collect();
    assert_eq!(
        d.keys().collect::<Vec<_>>(),
        from_scene_1,
        "scenes 1 and 2 from index 1"
    );
    same_bytes(&d, &a, "generations from index 0 and from index 1");
}

/// (e) images_N are box filters of the full-resolution image, checked by hand on one pixel each.
#[test]
fn downsampled_folders_are_box_filters() {
    let dir = tempfile::tempdir().unwrap();
    let scene = &run(dir.path(), &options(3, 2, 64, 48, 20))[0];
    let full = read_png(&scene.path.join("images/00001.png"));
    for factor in [2u32, 4, 8] {
        let small = read_png(&scene.path.join(format!("images_{factor}/00001.png")));
        assert_eq!(small.dimensions(), (64 / factor, 48 / factor));
        // The output pixel (1, 2) covers full-resolution columns factor..2·factor, rows 2·factor..3·factor.
        let mut sum = [0u32; 3];
        for y in 2 * factor..3 * factor {
            for x in factor..2 * factor {
                for (s, v) in sum.iter_mut().zip(full.get_pixel(x, y).0) {
                    *s += v as u32;
                }
            }
        }
        let n = factor * factor;
        let expected = sum.map(|s| ((s as f64 / n as f64) + 0.5).floor() as u8);
        assert_eq!(small.get_pixel(1, 2).0, expected, "images_{factor} pixel (1, 2)");
    }
}

/// (f) Bad options and bad destinations are errors that say what is wrong, and nothing is written.
#[test]
fn bad_options_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = options(1, 2, 32, 24, 10);
    let cases = [
        (
            SynthOptions {
                views: 0,
                ..good.clone()
            },
            "views",
        ),
        (
            SynthOptions {
                views: 1,
                ..good.clone()
            },
            "two views",
        ),
        (
            SynthOptions {
                scenes: 0,
                ..good.clone()
            },
            "scenes",
        ),
        (
            SynthOptions {
                first: usize::MAX,
                ..good.clone()
            },
            "overflows the scene index",
        ),
        (
            SynthOptions {
                width: 100,
                ..good.clone()
            },
            "multiples of 8",
        ),
        (
            SynthOptions {
                height: 0,
                ..good.clone()
            },
            "multiples of 8",
        ),
        (
            SynthOptions {
                width: 1 << 20,
                ..good.clone()
            },
            "not supported",
        ),
        (
            SynthOptions {
                points_per_scene: 0,
                ..good.clone()
            },
            "points_per_scene",
        ),
    ];
    for (options, expected) in cases {
        let error = generate(dir.path(), &options, |_| {}).unwrap_err();
        assert!(matches!(error, SynthError::InvalidOptions { .. }), "{error:?}");
        assert!(error.to_string().contains(expected), "{options:?}: {error}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Output "folder" that is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let error = generate(&file, &good, |_| {}).unwrap_err();
    assert!(error.to_string().contains(&*file.to_string_lossy()), "{error}");

    // A folder lrf-synth did not write is left alone; one it wrote is replaced.
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("scene000")).unwrap();
    std::fs::write(out.join("scene000/notes.txt"), b"mine").unwrap();
    let error = generate(&out, &good, |_| {}).unwrap_err();
    assert!(
        matches!(error, SynthError::NotGenerated { .. }) && error.to_string().contains("scene000"),
        "{error}"
    );
    assert_eq!(std::fs::read(out.join("scene000/notes.txt")).unwrap(), b"mine");
    std::fs::remove_dir_all(out.join("scene000")).unwrap();
    run(&out, &good);
    run(&out, &good);
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["scene000"], "no staging or old folders are left behind");
}

/// `Scene::new` and `render_view` reproduce what `generate` wrote, and progress reports every view.
#[test]
fn render_view_reproduces_written_views() {
    let dir = tempfile::tempdir().unwrap();
    let options = SynthOptions {
        scenes: 2,
        path: CameraPath::Alternate,
        ..options(4, 3, 32, 24, 20)
    };
    let reported = std::cell::RefCell::new(Vec::new());
    generate(dir.path(), &options, |event| {
        if let lrf_synth::Progress::View { scene, view, views } = event {
            reported.borrow_mut().push((scene.to_string(), view, views));
        }
    })
    .unwrap();
    let expected: Vec<_> = ["scene000", "scene001"]
        .iter()
        .flat_map(|s| (0..3).map(move |v| (s.to_string(), v, 3)))
        .collect();
    assert_eq!(reported.into_inner(), expected);
    let scene = lrf_synth::Scene::new(&options, 1).unwrap();
    assert_eq!(scene.camera_path, CameraPath::ForwardFacing);
    for view in &scene.views {
        let rendered = lrf_synth::render_view(&scene, &view.camera);
        let folder = dir.path().join(&scene.name);
        assert_eq!(rendered.image, read_png(&folder.join("images").join(&view.name)));
        let (_, _, depth) = read_depth(&folder.join("depth").join(format!("{}.safetensors", stem(&view.name))));
        assert_eq!(rendered.depth, depth);
        assert!(depth.iter().all(|d| d.is_finite() && *d > 0.0 || *d == f32::INFINITY));
    }
}

/// The scenes of one seed look different: some dark and some bright, some warm and some cool.
#[test]
fn scenes_vary_in_brightness_and_color() {
    let options = SynthOptions {
        scenes: 24,
        path: CameraPath::Alternate,
        ..options(3, 2, 48, 32, 1)
    };
    let looks: Vec<(f64, f64)> = (0..options.scenes)
        .map(|index| {
            let scene = lrf_synth::Scene::new(&options, index).unwrap();
            let image = lrf_synth::render_view(&scene, &scene.views[0].camera).image;
            let pixels = image.pixels().map(|p| p.0.map(f64::from));
            let (mut luminance, mut warmth) = (0.0, 0.0);
            for [r, g, b] in pixels {
                luminance += 0.2126 * r + 0.7152 * g + 0.0722 * b;
                warmth += r - b;
            }
            let n = (image.width() * image.height()) as f64;
            (luminance / n, warmth / n)
        })
        .collect();
    eprintln!("(mean luminance, mean red − blue) per scene: {looks:.0?}");
    let extremes = |f: fn(&(f64, f64)) -> f64| {
        let values = looks.iter().map(f);
        (
            values.clone().fold(f64::INFINITY, f64::min),
            values.fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (darkest, brightest) = extremes(|look| look.0);
    assert!(
        darkest < 40.0 && brightest > 150.0,
        "luminance {darkest:.0}..{brightest:.0}"
    );
    let (coolest, warmest) = extremes(|look| look.1);
    assert!(
        coolest < -30.0 && warmest > 30.0,
        "red − blue {coolest:.0}..{warmest:.0}"
    );
}
