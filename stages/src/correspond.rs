//! `correspondence-mine`: the pixel correspondences of LRF's Stage I for one scene (DESIGN.md §2, paper
//! eq. 5-7): pairs of pixels in neighbouring views that see the same 3D point, each with the APE weight of
//! its pair of views. They come from the COLMAP tracks (two observations of one point), or, for synthetic
//! scenes with exact depth, from reprojecting a pixel grid with an occlusion test.
//!
//! Also [`sample_latents`], the bilinear latent lookup at x/8 that the consistency metric and a Stage I
//! trainer share.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, bail};
use glam::{DMat4, DVec2, DVec3};
use lrf_formats::camera::Camera;
use lrf_formats::correspondences::Correspondences;
use lrf_formats::scene::Split;
use lrf_formats::shard::ShardReader;
use lrf_formats::views::{Points, ViewSet};
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::artifacts::{CORRESPONDENCES_TYPE, input_dir, output_dir, write_json};

pub const STATS_FILE: &str = "stats.json";
/// Bins of the APE histogram in `stats.json`.
const APE_BINS: usize = 10;

/// Where correspondences come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorrespondenceSource {
    /// `depth` when the scene folder has synthetic depth maps (`synth.json` and `depth/`), else `tracks`.
    Auto,
    /// Two observations of one COLMAP point in neighbouring views.
    Tracks,
    /// Reprojection of a pixel grid through exact depth maps, with an occlusion test.
    Depth,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrespondenceMine {
    pub source: CorrespondenceSource,
    /// Each view is paired with the next `sequential_overlap` views (COLMAP's sequential matcher).
    pub sequential_overlap: usize,
    /// Also pair view i with i + 2^k for every k ≥ 0.
    pub quadratic_overlap: bool,
    /// Tracks with fewer observations in participating views are skipped.
    pub min_track_length: usize,
    /// Only views of these splits take part (test views stay unseen by Stage I).
    pub splits: Vec<Split>,
    /// At most this many correspondences per pair of views, a seeded subsample above it.
    pub max_pairs_per_view_pair: usize,
    /// Depth mode: pixel stride of the grid reprojected from each view.
    pub depth_stride: u32,
    /// Depth mode: a reprojected point is visible in the other view when that view's depth there agrees
    /// with the point's depth within this fraction of it.
    pub depth_tolerance: f64,
    pub seed: u64,
}

impl Default for CorrespondenceMine {
    fn default() -> Self {
        CorrespondenceMine {
            source: CorrespondenceSource::Auto,
            sequential_overlap: 10,
            quadratic_overlap: true,
            min_track_length: 2,
            splits: vec![Split::Train],
            max_pairs_per_view_pair: 2000,
            depth_stride: 4,
            depth_tolerance: 0.01,
            seed: 0,
        }
    }
}

/// `correspondences/stats.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorrespondenceStats {
    pub scene: String,
    /// `tracks` or `depth` (what `auto` chose).
    pub source: CorrespondenceSource,
    /// Views taking part (those of the chosen splits).
    pub views: usize,
    /// Neighbouring view pairs considered, and those with at least one correspondence.
    pub view_pairs: usize,
    pub view_pairs_matched: usize,
    /// View pairs whose correspondences were subsampled to `max_pairs_per_view_pair`.
    pub view_pairs_subsampled: usize,
    /// Correspondences in the shard.
    pub correspondences: usize,
    /// Correspondences each participating view takes part in.
    pub per_view: MinMeanMax,
    /// APE of the correspondences (each carries its view pair's APE).
    pub ape: Histogram,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MinMeanMax {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

/// Equal-width bins from `edges[0]` to `edges[bins]`; the last bin includes its upper edge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
}

impl StageKind for CorrespondenceMine {
    const KIND: &'static str = "correspondence-mine";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: vec![
                Port::new("scene", lrf_graph::stage::SCENE_TYPE),
                Port::new("views", "views"),
            ],
            outputs: vec![Port::new("correspondences", CORRESPONDENCES_TYPE)],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.sequential_overlap > 1000 {
            return Err(format!(
                "sequential_overlap = {} is out of range 0..=1000",
                self.sequential_overlap
            ));
        }
        if self.sequential_overlap == 0 && !self.quadratic_overlap {
            return Err("sequential_overlap = 0 with quadratic_overlap = false pairs no views".into());
        }
        if !(2..=1000).contains(&self.min_track_length) {
            return Err(format!(
                "min_track_length = {} is out of range 2..=1000",
                self.min_track_length
            ));
        }
        if self.splits.is_empty() {
            return Err("splits must name at least one split (train, test)".into());
        }
        if !(1..=10_000_000).contains(&self.max_pairs_per_view_pair) {
            return Err(format!(
                "max_pairs_per_view_pair = {} is out of range 1..=10000000",
                self.max_pairs_per_view_pair
            ));
        }
        if !(1..=256).contains(&self.depth_stride) {
            return Err(format!("depth_stride = {} is out of range 1..=256", self.depth_stride));
        }
        if !(self.depth_tolerance > 0.0 && self.depth_tolerance <= 1.0) {
            return Err(format!(
                "depth_tolerance = {} is out of range (0, 1]",
                self.depth_tolerance
            ));
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let scene_dir = input_dir(job, "scene")?;
        let views_dir = input_dir(job, "views")?;
        let views = ViewSet::read(views_dir)?;
        let (shard, stats) = self.mine(scene_dir, views_dir, &views)?;
        let out = output_dir(job, "correspondences")?;
        shard.write(&out)?;
        write_json(&out.join(STATS_FILE), &stats)?;
        tracing::info!(
            scene = views.scene,
            source = ?stats.source,
            correspondences = stats.correspondences,
            view_pairs = stats.view_pairs_matched,
            "mined correspondences"
        );
        Ok(())
    }
}

impl CorrespondenceMine {
    /// The correspondences of one ingested scene and their statistics.
    pub fn mine(
        &self,
        scene_dir: &Path,
        views_dir: &Path,
        views: &ViewSet,
    ) -> anyhow::Result<(Correspondences, CorrespondenceStats)> {
        let participating: Vec<usize> = (0..views.views.len())
            .filter(|&i| self.splits.contains(&views.views[i].split))
            .collect();
        if participating.len() < 2 {
            bail!(
                "scene {:?}: {} view(s) of splits {:?} take part in correspondence mining; at least 2 are needed",
                views.scene,
                participating.len(),
                self.splits
            );
        }
        let pairs: Vec<(usize, usize)> =
            neighbor_pairs(participating.len(), self.sequential_overlap, self.quadratic_overlap)
                .into_iter()
                .map(|(a, b)| (participating[a], participating[b]))
                .collect();
        let source = match self.source {
            CorrespondenceSource::Auto if has_synthetic_depth(scene_dir) => CorrespondenceSource::Depth,
            CorrespondenceSource::Auto => CorrespondenceSource::Tracks,
            other => other,
        };
        let mut matches = match source {
            CorrespondenceSource::Depth => {
                let depth_views = participating
                    .iter()
                    .map(|&i| Ok((i, DepthView::load(scene_dir, views, i)?)))
                    .collect::<anyhow::Result<HashMap<usize, DepthView>>>()?;
                depth_matches(&depth_views, &pairs, self.depth_stride, self.depth_tolerance)
            }
            _ => {
                let points = Points::read(views_dir)?;
                track_matches(&points, views.views.len(), &pairs, self.min_track_length)
                    .with_context(|| format!("scene {:?}", views.scene))?
            }
        };

        let mut shard = Correspondences::default();
        let mut subsampled = 0;
        let mut matched = 0;
        let mut per_view: HashMap<usize, usize> = HashMap::new();
        for &(i, j) in &pairs {
            let Some(mut list) = matches.remove(&(i, j)) else {
                continue;
            };
            if list.is_empty() {
                continue;
            }
            if list.len() > self.max_pairs_per_view_pair {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(((i as u64) << 32) | j as u64);
                let mut keep = rand::seq::index::sample(&mut rng, list.len(), self.max_pairs_per_view_pair).into_vec();
                keep.sort_unstable();
                list = keep.into_iter().map(|k| list[k]).collect();
                subsampled += 1;
            }
            matched += 1;
            *per_view.entry(i).or_default() += list.len();
            *per_view.entry(j).or_default() += list.len();
            let weight = ape(&views.views[i].camera, &views.views[j].camera) as f32;
            for (pixel_i, pixel_j) in list {
                shard.view_i.push(i as i64);
                shard.view_j.push(j as i64);
                shard.pixel_i.push(pixel_i);
                shard.pixel_j.push(pixel_j);
                shard.ape.push(weight);
            }
        }
        if shard.is_empty() {
            bail!(
                "scene {:?}: no correspondences found ({source:?} source, {} views, {} neighbouring view pairs)",
                views.scene,
                participating.len(),
                pairs.len()
            );
        }
        let counts: Vec<f64> = participating
            .iter()
            .map(|i| per_view.get(i).copied().unwrap_or(0) as f64)
            .collect();
        let stats = CorrespondenceStats {
            scene: views.scene.clone(),
            source,
            views: participating.len(),
            view_pairs: pairs.len(),
            view_pairs_matched: matched,
            view_pairs_subsampled: subsampled,
            correspondences: shard.len(),
            per_view: MinMeanMax {
                min: counts.iter().copied().fold(f64::INFINITY, f64::min),
                mean: counts.iter().sum::<f64>() / counts.len() as f64,
                max: counts.iter().copied().fold(0.0, f64::max),
            },
            ape: histogram(&shard.ape, APE_BINS),
        };
        Ok((shard, stats))
    }
}

/// Whether `scene_dir` is an lrf-synth scene with depth maps.
pub fn has_synthetic_depth(scene_dir: &Path) -> bool {
    scene_dir.join("synth.json").is_file() && scene_dir.join("depth").is_dir()
}

/// The neighbour set K of `n` views in order, as unordered pairs `(a, b)` with `a < b`, each once, sorted:
/// `b = a + d` for `d` in `1..=sequential`, and for `d = 2^k` (k ≥ 0) when `quadratic` (COLMAP's sequential
/// matcher with quadratic overlap).
pub fn neighbor_pairs(n: usize, sequential: usize, quadratic: bool) -> Vec<(usize, usize)> {
    let mut pairs = BTreeSet::new();
    for a in 0..n {
        for d in 1..=sequential.min(n) {
            if a + d < n {
                pairs.insert((a, a + d));
            }
        }
        if quadratic {
            let mut d = 1;
            while a + d < n {
                pairs.insert((a, a + d));
                d *= 2;
            }
        }
    }
    pairs.into_iter().collect()
}

/// APE_ij = ‖P_i⁻¹ P_j − I‖_F with P the 4×4 camera-to-world poses.
pub fn ape(a: &Camera, b: &Camera) -> f64 {
    let e = a.world_to_camera() * b.camera_to_world() - DMat4::IDENTITY;
    e.to_cols_array().iter().map(|v| v * v).sum::<f64>().sqrt()
}

type Matches = HashMap<(usize, usize), Vec<([f32; 2], [f32; 2])>>;

/// Tracks mode: every two observations of one point in views `i < j` that form one of `pairs`.
fn track_matches(
    points: &Points,
    view_count: usize,
    pairs: &[(usize, usize)],
    min_track_length: usize,
) -> anyhow::Result<Matches> {
    let wanted: HashSet<(usize, usize)> = pairs.iter().copied().collect();
    let participating: HashSet<usize> = pairs.iter().flat_map(|&(i, j)| [i, j]).collect();
    let mut tracks: Vec<Vec<(usize, [f32; 2])>> = vec![Vec::new(); points.positions.len()];
    for ((&point, &view), &pixel) in points
        .track_point
        .iter()
        .zip(&points.track_view)
        .zip(&points.track_pixel)
    {
        if !(0..view_count as i64).contains(&view) {
            bail!("a track observation names view {view}, but the scene has {view_count} views");
        }
        let view = view as usize;
        if participating.contains(&view) {
            tracks[point as usize].push((view, pixel));
        }
    }
    let mut matches = Matches::new();
    for track in tracks.iter().filter(|t| t.len() >= min_track_length) {
        for (a, &(view_a, pixel_a)) in track.iter().enumerate() {
            for &(view_b, pixel_b) in &track[a + 1..] {
                let (pair, pixels) = if view_a < view_b {
                    ((view_a, view_b), (pixel_a, pixel_b))
                } else {
                    ((view_b, view_a), (pixel_b, pixel_a))
                };
                if wanted.contains(&pair) {
                    matches.entry(pair).or_default().push(pixels);
                }
            }
        }
    }
    Ok(matches)
}

/// A view's exact depth map (lrf-synth: z along the optical axis at the full-resolution pixel centres) and
/// the mapping between the ingested (resized, then centre-cropped) image and the depth map's pixels.
pub struct DepthView {
    /// The ingested camera.
    pub camera: Camera,
    depth: Vec<f32>,
    width: usize,
    height: usize,
    /// Depth-map pixels per pixel of the image folder's images, in x and y.
    scale: DVec2,
    /// The crop ingest cut off the image folder's images (left, top).
    offset: DVec2,
}

impl DepthView {
    /// View `index` of `views`, with its depth map from `scene_dir/depth/<stem>.safetensors`.
    pub fn load(scene_dir: &Path, views: &ViewSet, index: usize) -> anyhow::Result<Self> {
        let record = &views.views[index];
        let stem = Path::new(&record.name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| record.name.clone());
        let depth_path = scene_dir.join("depth").join(format!("{stem}.safetensors"));
        let shard = ShardReader::open(&depth_path).with_context(|| {
            format!(
                "scene {:?}: depth mode needs a depth map per view (source: tracks uses the COLMAP tracks instead)",
                views.scene
            )
        })?;
        let shape = shard.shape("depth")?.to_vec();
        let [height, width] = shape[..] else {
            bail!("{}: depth has shape {shape:?}, expected [H, W]", depth_path.display());
        };
        let depth = shard.to_vec_f32("depth")?;
        // Ingest resized the camera to the image folder's size, then centre-cropped it to the multiple.
        let image_path = scene_dir.join(&views.images).join(&record.name);
        let (folder_w, folder_h) = lrf_formats::image::image_size(&image_path)?;
        let camera = record.camera.clone();
        if camera.width > folder_w || camera.height > folder_h {
            bail!(
                "scene {:?} view {:?}: ingested size {}×{} exceeds the image folder's {folder_w}×{folder_h}; the views \
                 do not come from {}",
                views.scene,
                record.name,
                camera.width,
                camera.height,
                image_path.display()
            );
        }
        let offset = DVec2::new(
            ((folder_w - camera.width) / 2) as f64,
            ((folder_h - camera.height) / 2) as f64,
        );
        let scale = DVec2::new(width as f64 / folder_w as f64, height as f64 / folder_h as f64);
        if scale.x < 1.0 || scale.y < 1.0 || (scale.x - scale.y).abs() > 1e-6 * scale.x {
            bail!(
                "{}: the depth map is {width}×{height}, which is not an upscale of the ingested image folder's \
                 {folder_w}×{folder_h} by one factor",
                depth_path.display()
            );
        }
        Ok(DepthView {
            camera,
            depth,
            width,
            height,
            scale,
            offset,
        })
    }

    /// An ingested-image position in depth-map pixel coordinates.
    pub fn to_depth_pixel(&self, pixel: DVec2) -> DVec2 {
        (pixel + self.offset) * self.scale
    }

    /// A depth-map position in ingested-image pixel coordinates.
    pub fn from_depth_pixel(&self, pixel: DVec2) -> DVec2 {
        pixel / self.scale - self.offset
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        self.depth[y * self.width + x]
    }

    /// Depth bilinear over the depth-map pixel centres at an ingested-image position (clamped to the border),
    /// or `None` where one of the four samples sees sky.
    pub fn depth_at(&self, pixel: DVec2) -> Option<f64> {
        let q = self.to_depth_pixel(pixel);
        let fx = (q.x - 0.5).clamp(0.0, self.width as f64 - 1.0);
        let fy = (q.y - 0.5).clamp(0.0, self.height as f64 - 1.0);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (tx, ty) = (fx - x0 as f64, fy - y0 as f64);
        let samples = [self.at(x0, y0), self.at(x1, y0), self.at(x0, y1), self.at(x1, y1)];
        if samples.iter().any(|d| !d.is_finite() || *d <= 0.0) {
            return None;
        }
        let [a, b, c, d] = samples.map(f64::from);
        Some((a * (1.0 - tx) + b * tx) * (1.0 - ty) + (c * (1.0 - tx) + d * tx) * ty)
    }

    /// The world point seen at an ingested-image position at z-depth `depth`.
    pub fn unproject(&self, pixel: DVec2, depth: f64) -> DVec3 {
        let c = &self.camera;
        let local = DVec3::new((pixel.x - c.cx) / c.fx * depth, (pixel.y - c.cy) / c.fy * depth, depth);
        c.rotation.transpose() * (local - c.translation)
    }

    /// The grid of exact samples: every `stride`-th ingested pixel, moved to the nearest depth-map pixel
    /// centre (where the depth is exact), as (ingested position, world point); sky is skipped.
    fn grid(&self, stride: u32) -> Vec<(DVec2, DVec3)> {
        let (w, h) = (self.camera.width, self.camera.height);
        let mut out = Vec::new();
        for y in (stride / 2..h).step_by(stride as usize) {
            for x in (stride / 2..w).step_by(stride as usize) {
                let q = self.to_depth_pixel(DVec2::new(x as f64 + 0.5, y as f64 + 0.5));
                let (qx, qy) = (q.x.floor() as usize, q.y.floor() as usize);
                if qx >= self.width || qy >= self.height {
                    continue;
                }
                let depth = self.at(qx, qy);
                if !depth.is_finite() || depth <= 0.0 {
                    continue;
                }
                let pixel = self.from_depth_pixel(DVec2::new(qx as f64 + 0.5, qy as f64 + 0.5));
                if self.camera.contains(pixel) {
                    out.push((pixel, self.unproject(pixel, depth as f64)));
                }
            }
        }
        out
    }

    /// Where `world` appears in this view if it is on the image and not occluded (this view's depth there
    /// agrees with the point's within `tolerance` of it).
    pub fn visible_at(&self, world: DVec3, tolerance: f64) -> Option<DVec2> {
        let (pixel, z) = self.camera.project(world)?;
        if !self.camera.contains(pixel) {
            return None;
        }
        let seen = self.depth_at(pixel)?;
        ((seen - z).abs() <= tolerance * z).then_some(pixel)
    }
}

/// Depth mode: view i's grid reprojected into view j for each pair (i, j), kept where visible in j.
fn depth_matches(views: &HashMap<usize, DepthView>, pairs: &[(usize, usize)], stride: u32, tolerance: f64) -> Matches {
    let mut grids: HashMap<usize, Vec<(DVec2, DVec3)>> = HashMap::new();
    let mut matches = Matches::new();
    for &(i, j) in pairs {
        let grid = grids.entry(i).or_insert_with(|| views[&i].grid(stride));
        let target = &views[&j];
        let list: Vec<_> = grid
            .iter()
            .filter_map(|&(pixel, world)| {
                let seen = target.visible_at(world, tolerance)?;
                Some(([pixel.x as f32, pixel.y as f32], [seen.x as f32, seen.y as f32]))
            })
            .collect();
        matches.insert((i, j), list);
    }
    matches
}

fn histogram(values: &[f32], bins: usize) -> Histogram {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min) as f64;
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let (lo, hi) = if values.is_empty() { (0.0, 0.0) } else { (lo, hi) };
    let width = (hi - lo) / bins as f64;
    let edges = (0..=bins).map(|k| lo + width * k as f64).collect();
    let mut counts = vec![0; bins];
    for &v in values {
        let k = if width > 0.0 {
            ((v as f64 - lo) / width) as usize
        } else {
            0
        };
        counts[k.min(bins - 1)] += 1;
    }
    Histogram { edges, counts }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use glam::DMat3;
    use lrf_formats::image::ImageF32;
    use lrf_formats::views::ViewRecord;
    use lrf_graph::Input;
    use tch::{Kind, Tensor};

    use crate::latents::{pixels_tensor, sample_latents};
    use rand::Rng;

    use super::*;
    use crate::ingest::{ColmapIngest, ImageFolders};

    fn camera(translation: DVec3) -> Camera {
        Camera {
            rotation: DMat3::IDENTITY,
            translation,
            fx: 50.0,
            fy: 50.0,
            cx: 16.0,
            cy: 12.0,
            width: 32,
            height: 24,
        }
    }

    #[test]
    fn neighbor_set_of_twelve_views() {
        // Sequential 10 and quadratic (1, 2, 4, 8): every pair but (0, 11).
        let all = neighbor_pairs(12, 10, true);
        let expected: Vec<(usize, usize)> = (0..12)
            .flat_map(|a| (a + 1..12).map(move |b| (a, b)))
            .filter(|&(a, b)| b - a <= 10)
            .collect();
        assert_eq!(all, expected);
        assert_eq!(all.len(), 65);
        // Sequential 1 and quadratic: offsets 1, 2, 4, 8.
        let quadratic = neighbor_pairs(12, 1, true);
        let mut expected = Vec::new();
        for a in 0..12 {
            for d in [1, 2, 4, 8] {
                if a + d < 12 {
                    expected.push((a, a + d));
                }
            }
        }
        expected.sort();
        assert_eq!(quadratic, expected);
        assert_eq!(quadratic.len(), 11 + 10 + 8 + 4);
        // Sequential 3 alone.
        let sequential = neighbor_pairs(12, 3, false);
        assert_eq!(sequential.len(), 11 + 10 + 9);
        assert_eq!(&sequential[..4], &[(0, 1), (0, 2), (0, 3), (1, 2)]);
        assert_eq!(neighbor_pairs(1, 10, true), []);
    }

    #[test]
    fn ape_of_identical_and_offset_poses() {
        let a = camera(DVec3::new(0.0, 0.0, 3.0));
        assert_eq!(ape(&a, &a), 0.0);
        // Same rotation: E = [I | t_a − t_b], so APE = |t_a − t_b| = 5.
        let b = camera(DVec3::new(3.0, 4.0, 3.0));
        assert!((ape(&a, &b) - 5.0).abs() < 1e-12);
        // Same centre, 90° about z: ‖R − I‖_F = 2.
        let mut c = a.clone();
        c.rotation = DMat3::from_rotation_z(std::f64::consts::FRAC_PI_2);
        c.translation = -(c.rotation * a.center());
        assert!((ape(&a, &c) - 2.0).abs() < 1e-12, "{}", ape(&a, &c));
    }

    fn hand_views(dir: &Path) -> ViewSet {
        let splits = [Split::Train, Split::Train, Split::Test, Split::Train, Split::Train];
        let views = ViewSet {
            scene: "hand".into(),
            images: "images".into(),
            views: splits
                .iter()
                .enumerate()
                .map(|(i, &split)| ViewRecord {
                    name: format!("{i:05}.png"),
                    split,
                    camera: camera(DVec3::new(i as f64, 0.0, 3.0)),
                })
                .collect(),
        };
        views.write(dir).unwrap();
        views
    }

    #[test]
    fn tracks_mode_on_a_hand_built_scene() {
        let dir = tempfile::tempdir().unwrap();
        let views = hand_views(dir.path());
        let points = Points {
            positions: vec![[0.0; 3]; 3],
            colors: vec![[0; 3]; 3],
            // Point 0: views 0, 2 (test), 4. Point 1: views 0, 1, 3. Point 2: view 1 and test view 2 only.
            track_point: vec![0, 0, 0, 1, 1, 1, 2, 2],
            track_view: vec![4, 0, 2, 0, 1, 3, 1, 2],
            track_pixel: vec![
                [4.0, 4.5],
                [0.5, 0.5],
                [2.0, 2.0],
                [1.0, 1.0],
                [1.5, 1.5],
                [3.5, 3.5],
                [7.0, 7.0],
                [8.0, 8.0],
            ],
        };
        points.write(dir.path()).unwrap();
        // Train views 0, 1, 3, 4 are positions 0..4; sequential 1 + quadratic gives offsets 1 and 2, so the
        // pairs (0,1) (0,3) (1,3) (1,4) (3,4); (0, 4) is offset 3, not in K. Point 0 only links 0 and 4, point 2
        // has one participating observation.
        let stage = CorrespondenceMine {
            source: CorrespondenceSource::Tracks,
            sequential_overlap: 1,
            ..Default::default()
        };
        let (shard, stats) = stage.mine(dir.path(), dir.path(), &views).unwrap();
        let got: Vec<(i64, i64, [f32; 2], [f32; 2])> = (0..shard.len())
            .map(|k| (shard.view_i[k], shard.view_j[k], shard.pixel_i[k], shard.pixel_j[k]))
            .collect();
        assert_eq!(
            got,
            [
                (0, 1, [1.0, 1.0], [1.5, 1.5]),
                (0, 3, [1.0, 1.0], [3.5, 3.5]),
                (1, 3, [1.5, 1.5], [3.5, 3.5]),
            ]
        );
        assert!((shard.ape[0] - 1.0).abs() < 1e-6 && (shard.ape[1] - 3.0).abs() < 1e-6);
        assert_eq!(stats.source, CorrespondenceSource::Tracks);
        assert_eq!((stats.views, stats.view_pairs, stats.view_pairs_matched), (4, 5, 3));
        assert_eq!(stats.per_view.min, 0.0); // view 4's only partner is view 0, which is not in K(4).
        assert_eq!(stats.ape.counts.iter().sum::<usize>(), 3);

        // With full overlap (0, 4) appears; a minimum track length of 4 drops every point (2 and 3 participating
        // observations).
        let full = CorrespondenceMine {
            source: CorrespondenceSource::Tracks,
            ..Default::default()
        };
        let (shard, _) = full.mine(dir.path(), dir.path(), &views).unwrap();
        assert_eq!(shard.len(), 4);
        assert_eq!((shard.view_i[2], shard.view_j[2], shard.pixel_j[2]), (0, 4, [4.0, 4.5]));
        let long = CorrespondenceMine {
            min_track_length: 4,
            ..full
        };
        let error = long.mine(dir.path(), dir.path(), &views).unwrap_err().to_string();
        assert!(
            error.contains("\"hand\"") && error.contains("no correspondences"),
            "{error}"
        );
        let test_only = CorrespondenceMine {
            splits: vec![Split::Test],
            ..Default::default()
        };
        let error = test_only.mine(dir.path(), dir.path(), &views).unwrap_err().to_string();
        assert!(error.contains("\"hand\"") && error.contains("at least 2"), "{error}");
    }

    /// A 64×48, 6-view synthetic scene ingested from `images_2` with multiple 16, so the views are resized
    /// (depth maps are full resolution) and centre-cropped (32×24 → 32×16, 4 rows off the top).
    fn synthetic(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let options = lrf_synth::SynthOptions {
            scenes: 1,
            views: 6,
            width: 64,
            height: 48,
            seed: 3,
            points_per_scene: 300,
            ..Default::default()
        };
        let scene = lrf_synth::generate(&dir.join("scenes"), &options, |_| {}).unwrap()[0]
            .path
            .clone();
        let ingest = ColmapIngest {
            images: ImageFolders::One("images_2".into()),
            multiple: 16,
            test_every: 6,
            ..Default::default()
        };
        let inputs = BTreeMap::from([("scene".to_string(), Input::One(scene.clone()))]);
        let out = dir.join("ingest");
        let job = Job {
            stage_id: "ingest",
            scene: Some("scene000"),
            inputs: &inputs,
            missing: &[],
            out: &out,
            status: &lrf_graph::stage::no_status,
        };
        StageKind::run(&ingest, &job).unwrap();
        (scene, out.join("views"))
    }

    #[test]
    fn depth_mode_on_a_synthetic_scene_agrees_with_its_exact_tracks() {
        let dir = tempfile::tempdir().unwrap();
        let (scene, views_dir) = synthetic(dir.path());
        let views = ViewSet::read(&views_dir).unwrap();
        assert_eq!((views.views[0].camera.width, views.views[0].camera.height), (32, 16));
        assert!(has_synthetic_depth(&scene));
        let depth: Vec<DepthView> = (0..views.views.len())
            .map(|i| DepthView::load(&scene, &views, i).unwrap())
            .collect();

        // The machinery: a tracked point unprojected from one observation through the depth map lands on its
        // observation in every other view, and is visible there.
        let points = Points::read(&views_dir).unwrap();
        let mut checked = 0;
        for (a, (&point_a, &view_a)) in points.track_point.iter().zip(&points.track_view).enumerate() {
            let pixel_a = DVec2::from(points.track_pixel[a].map(f64::from));
            let view = &depth[view_a as usize];
            let Some(z) = view.depth_at(pixel_a) else { continue };
            let world = view.unproject(pixel_a, z);
            assert!((world - DVec3::from(points.positions[point_a as usize])).length() < 0.02 * z);
            for b in (0..points.track_point.len()).filter(|&b| b != a && points.track_point[b] == point_a) {
                let target = &depth[points.track_view[b] as usize];
                let pixel_b = DVec2::from(points.track_pixel[b].map(f64::from));
                let (projected, _) = target.camera.project(world).unwrap();
                // Bilinear depth between exact samples: about 0.015 px off at most here.
                assert!((projected - pixel_b).length() < 0.05, "{projected} vs {pixel_b}");
                assert!(target.visible_at(world, 0.01).is_some());
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} track pairs checked");

        // The stage: depth correspondences follow the flow the exact tracks show nearby.
        let stage = CorrespondenceMine {
            depth_stride: 1,
            ..Default::default()
        };
        let (shard, stats) = stage.mine(&scene, &views_dir, &views).unwrap();
        assert_eq!(stats.source, CorrespondenceSource::Depth);
        assert!(shard.len() > 100, "{}", shard.len());
        let test: HashSet<usize> = views.indices(Split::Test).into_iter().collect();
        let mut compared = 0;
        for k in 0..shard.len() {
            let (i, j) = (shard.view_i[k] as usize, shard.view_j[k] as usize);
            assert!(i < j && !test.contains(&i) && !test.contains(&j));
            let (pi, pj) = (
                DVec2::from(shard.pixel_i[k].map(f64::from)),
                DVec2::from(shard.pixel_j[k].map(f64::from)),
            );
            assert!(depth[i].camera.contains(pi) && depth[j].camera.contains(pj));
            // Exact: p_i is a depth-map pixel centre, so its depth is exact and reprojection is exact.
            let z = depth[i].depth_at(pi).unwrap();
            let (again, _) = depth[j].camera.project(depth[i].unproject(pi, z)).unwrap();
            assert!((again - pj).length() < 1e-3);
            // Against the tracks: a point observed in i within 0.5 px of p_i moves like p_i.
            for a in (0..points.track_point.len()).filter(|&a| points.track_view[a] as usize == i) {
                let ta = DVec2::from(points.track_pixel[a].map(f64::from));
                // Near enough, and on the same surface (a grid sample beside a sphere's rim may see the ground).
                let point = DVec3::from(points.positions[points.track_point[a] as usize]);
                if (ta - pi).length() > 0.5 || (depth[i].camera.to_camera(point).z - z).abs() > 0.01 * z {
                    continue;
                }
                let partner = (0..points.track_point.len())
                    .find(|&b| points.track_point[b] == points.track_point[a] && points.track_view[b] as usize == j);
                if let Some(b) = partner {
                    let tb = DVec2::from(points.track_pixel[b].map(f64::from));
                    // Flow changes across half a pixel by a multiple of the step between views this far apart
                    // (foreshortening of the ground at 32×16: up to 3.5× seen between views 2 and 5 of this
                    // orbit), so this bounds the flow difference by 4× the distance.
                    let (step, difference) = ((ta - pi).length(), ((pj - pi) - (tb - ta)).length());
                    assert!(
                        difference < 0.1 + 4.0 * step,
                        "flow {} vs track {} at {step} px from the track",
                        pj - pi,
                        tb - ta
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 5, "only {compared} correspondences near tracks");

        // Subsampling bounds every view pair, the same way each time.
        let few = CorrespondenceMine {
            max_pairs_per_view_pair: 10,
            ..stage.clone()
        };
        let (small, stats) = few.mine(&scene, &views_dir, &views).unwrap();
        assert!(stats.view_pairs_subsampled > 0);
        let mut per_pair: HashMap<(i64, i64), usize> = HashMap::new();
        for k in 0..small.len() {
            *per_pair.entry((small.view_i[k], small.view_j[k])).or_default() += 1;
        }
        assert!(per_pair.values().all(|&n| n <= 10));
        assert!(per_pair.values().filter(|&&n| n == 10).count() >= stats.view_pairs_subsampled);
        assert_eq!(few.mine(&scene, &views_dir, &views).unwrap().0, small);

        // Through the registry and a job: the shard and stats.json land in the output port's folder.
        let mut registry = lrf_graph::Registry::new();
        crate::register(&mut registry);
        let built = registry
            .build(
                CorrespondenceMine::KIND,
                serde_json::json!({"depth_stride": 2}),
                Path::new("."),
            )
            .unwrap()
            .unwrap();
        let error = registry
            .build(
                CorrespondenceMine::KIND,
                serde_json::json!({"depth_stride": 0}),
                Path::new("."),
            )
            .unwrap()
            .err()
            .unwrap();
        assert!(error.contains("depth_stride"), "{error}");
        let inputs = BTreeMap::from([
            ("scene".to_string(), Input::One(scene.clone())),
            ("views".to_string(), Input::One(views_dir.clone())),
        ]);
        let out = dir.path().join("mine");
        let job = Job {
            stage_id: "mine",
            scene: Some("scene000"),
            inputs: &inputs,
            missing: &[],
            out: &out,
            status: &lrf_graph::stage::no_status,
        };
        built.run(&job).unwrap();
        let written = Correspondences::read(&out.join("correspondences"), views.views.len()).unwrap();
        let stats: CorrespondenceStats =
            crate::artifacts::read_json(&out.join("correspondences").join(STATS_FILE)).unwrap();
        assert_eq!(
            (written.len(), stats.source),
            (stats.correspondences, CorrespondenceSource::Depth)
        );

        // Auto on a COLMAP-only scene takes the tracks; the tracks give correspondences too.
        let tracks = CorrespondenceMine {
            source: CorrespondenceSource::Tracks,
            ..Default::default()
        };
        let (shard, stats) = tracks.mine(&scene, &views_dir, &views).unwrap();
        assert_eq!(stats.source, CorrespondenceSource::Tracks);
        assert!(!shard.is_empty());
        let auto = CorrespondenceMine::default();
        let (_, stats) = auto.mine(&views_dir, &views_dir, &views).unwrap();
        assert_eq!(stats.source, CorrespondenceSource::Tracks);
    }

    #[test]
    fn sample_latents_matches_sample_bilinear() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (c, w, h, f) = (4usize, 7u32, 5u32, 8.0);
        let mut image = ImageF32::new(c, w, h);
        image.data.iter_mut().for_each(|v| *v = rng.random_range(0.0..1.0));
        // In f64, so the difference left is the f32 rounding of `sample_bilinear` alone.
        let latent = Tensor::from_slice(&image.data)
            .view([c as i64, h as i64, w as i64])
            .to_kind(Kind::Double);
        // Including positions beyond the border, which both clamp.
        let pixels: Vec<[f32; 2]> = (0..200)
            .map(|_| {
                [
                    rng.random_range(-10.0..w as f32 * 8.0 + 10.0),
                    rng.random_range(-10.0..h as f32 * 8.0 + 10.0),
                ]
            })
            .collect();
        let sampled = sample_latents(&latent, &pixels_tensor(&pixels), f);
        assert_eq!(sampled.size(), [200, c as i64]);
        assert_eq!(sampled.kind(), Kind::Double);
        let values = Vec::<f64>::try_from(sampled.flatten(0, 1)).unwrap();
        for (m, p) in pixels.iter().enumerate() {
            for channel in 0..c {
                let expected = image.sample_bilinear(channel, p[0] as f64 / f, p[1] as f64 / f);
                let got = values[m * c + channel];
                assert!(
                    (got - expected as f64).abs() < 1e-6,
                    "pixel {p:?} channel {channel}: {got} vs {expected}"
                );
            }
        }
    }
}
