//! Procedural test scenes, ray traced with exact depth and exact COLMAP tracks.
//!
//! A scene is spheres and boxes either on a textured ground plane under a sky, seen by cameras on an
//! orbit or a forward-facing spiral, or around the middle of a closed room (textured floor, four
//! walls, ceiling), seen inside out by cameras standing in the middle and looking outwards (see
//! [`CameraPath`]). Each scene draws its own lighting (sun direction, elevation and colour
//! temperature, ambient light, sky, exposure: from dark to bright), palette (hue spread, saturation,
//! brightness) and textures (solid, checker, stripes, blotches, marble, gradients, bricks,
//! text-like glyphs), so that a few dozen scenes make a varied training corpus. It is written in
//! the COLMAP / 3DGS layout:
//!
//! ```text
//! <out>/<scene>/images/00000.png ...     full resolution
//! <out>/<scene>/images_{2,4,8}/...       box-filter downsamples by exactly 2, 4, 8
//! <out>/<scene>/depth/00000.safetensors  f32 "depth" [H, W]: z along the optical axis at the
//!                                        full-resolution pixel centres, +inf where sky is seen
//!                                        (never in rooms)
//! <out>/<scene>/sparse/0/{cameras,images,points3D}.bin
//! <out>/<scene>/synth.json               how the scene was made (also marks it as replaceable)
//! ```
//!
//! Because the generator knows the geometry, the model is exact: one PINHOLE camera, true poses,
//! 3D points on visible surfaces whose tracks list every view that sees them unoccluded and clearly
//! (not across an edge, see `points`), with keypoints at the exact sub-pixel projections and colours
//! equal to the surface's (view-independent) radiance, which the pixels there show too.
//! Everything is a function of the seed: the same options give byte-identical files whatever the
//! number of threads.

mod cameras;
mod lighting;
mod materials;
mod output;
mod points;
mod render;
mod texture;
mod world;

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use cameras::{CameraPath, View};
pub use render::{RenderedView, render_view};

use world::World;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthOptions {
    pub scenes: usize,
    /// Views per scene; at least 2, so that points have tracks.
    pub views: usize,
    /// Full-resolution image size; both must be multiples of 8.
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub path: CameraPath,
    /// Points to sample per scene. Fewer are written only if the views see too little clear, smooth
    /// surface to find them, which happens below about 128×96 pixels, where a pixel covers much
    /// of a texture's flat patches.
    pub points_per_scene: usize,
    /// Scene folders are named `<prefix>000`, `<prefix>001`, ...: two generated sets in one pipeline need
    /// different prefixes.
    pub prefix: String,
    /// Index of the first scene: the scenes are `first`, `first + 1`, ..., each the same files as the scene of
    /// that index in a generation from 0 with the same seed. One generated corpus can so be split into parts
    /// with roles of their own (a study's training subsets) whose scenes keep their store keys.
    pub first: usize,
}

/// The default scene folder prefix.
pub const SCENE_PREFIX: &str = "scene";

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            scenes: 2,
            views: 24,
            width: 256,
            height: 192,
            seed: 0,
            path: CameraPath::Alternate,
            points_per_scene: 2000,
            prefix: SCENE_PREFIX.into(),
            first: 0,
        }
    }
}

/// Largest accepted image side: far beyond test scenes, small enough that a frame fits in memory.
const MAX_SIDE: u32 = 16384;
/// Image names have five digits.
const MAX_VIEWS: usize = 100_000;

impl SynthOptions {
    /// Checks every option, naming the one at fault.
    pub fn validate(&self) -> Result<(), SynthError> {
        let invalid = |option: &'static str, message: String| Err(SynthError::InvalidOptions { option, message });
        if self.scenes == 0 {
            return invalid("scenes", "must be at least 1".into());
        }
        if self.first.checked_add(self.scenes).is_none() {
            return invalid(
                "first",
                format!("{} + {} scenes overflows the scene index", self.first, self.scenes),
            );
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.prefix.is_empty() || !self.prefix.chars().all(allowed) {
            return invalid(
                "prefix",
                format!("{:?}: use letters, digits, - and _ (it names folders)", self.prefix),
            );
        }
        if !(2..=MAX_VIEWS).contains(&self.views) {
            return invalid(
                "views",
                format!(
                    "must be between 2 and {MAX_VIEWS} (a 3D point needs two views), got {}",
                    self.views
                ),
            );
        }
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 || !w.is_multiple_of(8) || !h.is_multiple_of(8) {
            return invalid(
                "size",
                format!(
                    "{w}x{h}: width and height must be positive multiples of 8, because images_2, images_4 and \
                     images_8 are box downsamples by exactly 2, 4 and 8"
                ),
            );
        }
        if w > MAX_SIDE || h > MAX_SIDE {
            return invalid(
                "size",
                format!("{w}x{h}: sides above {MAX_SIDE} pixels are not supported"),
            );
        }
        if self.points_per_scene == 0 {
            return invalid(
                "points_per_scene",
                "must be at least 1 (3DGS starts from the points)".into(),
            );
        }
        Ok(())
    }
}

/// A procedural scene and its views, as [`generate`] writes scene `index`.
#[derive(Clone, Debug)]
pub struct Scene {
    /// Folder name: `scene000`, `scene001`, ...
    pub name: String,
    /// The path this scene's cameras follow (never [`CameraPath::Alternate`]).
    pub camera_path: CameraPath,
    pub views: Vec<View>,
    world: World,
}

/// Independent random streams of one scene, so that changing the number of scenes or points
/// leaves the other scenes and the geometry unchanged.
#[derive(Clone, Copy)]
enum Stream {
    Layout = 0,
    Points = 1,
}

fn rng(seed: u64, index: usize, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(2 * index as u64 + stream as u64);
    rng
}

impl Scene {
    pub fn new(options: &SynthOptions, index: usize) -> Result<Scene, SynthError> {
        options.validate()?;
        let mut rng = rng(options.seed, index, Stream::Layout);
        let camera_path = options.path.for_scene(index);
        let world = World::random(&mut rng, camera_path);
        let views = cameras::views(camera_path, options.views, options.width, options.height, &mut rng);
        Ok(Scene {
            name: format!("{}{index:03}", options.prefix),
            camera_path,
            views,
            world,
        })
    }
}

/// One scene written by [`generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedScene {
    pub name: String,
    /// The scene folder, `<out>/<name>`.
    pub path: PathBuf,
    pub camera_path: CameraPath,
    pub views: usize,
    pub points: usize,
    /// Keypoints over all images, that is the summed track lengths.
    pub observations: usize,
}

/// A step [`generate`] has finished, for progress reports.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// View `view` (counting from 0) of `views` of scene `scene` is rendered and written.
    View { scene: &'a str, view: usize, views: usize },
    /// A scene is complete and in place.
    Scene(&'a GeneratedScene),
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid option {option}: {message}")]
    InvalidOptions { option: &'static str, message: String },
    #[error(
        "{}: already exists and was not written by lrf-synth (it has no synth.json); remove it or choose another output folder",
        path.display()
    )]
    NotGenerated { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot encode PNG: {source}", path.display())]
    Png {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error(transparent)]
    Format(#[from] lrf_formats::FormatError),
}

/// Generates `options.scenes` scenes into `out` (created if missing), one after the other.
///
/// Each scene is assembled in a hidden sibling folder and renamed into place when complete, so an
/// interrupted run leaves no half scene. A scene folder that already exists is replaced if
/// lrf-synth wrote it (it holds `synth.json`) and is an error otherwise; all are checked before
/// anything is rendered.
pub fn generate(
    out: &Path,
    options: &SynthOptions,
    progress: impl Fn(Progress<'_>),
) -> Result<Vec<GeneratedScene>, SynthError> {
    options.validate()?;
    std::fs::create_dir_all(out).map_err(|source| SynthError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let indices = options.first..options.first + options.scenes;
    for index in indices.clone() {
        output::check_replaceable(&out.join(format!("{}{index:03}", options.prefix)))?;
    }
    indices
        .map(|index| {
            let scene = Scene::new(options, index)?;
            let mut rng = rng(options.seed, index, Stream::Points);
            let generated = output::write_scene(out, &scene, options, index, &mut rng, &progress)?;
            progress(Progress::Scene(&generated));
            Ok(generated)
        })
        .collect()
}
