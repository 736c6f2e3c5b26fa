//! What the training stages share: the training extent, the view order, loss curves, the latent camera,
//! libtorch's thread count inside a step, a weight average, and how a field is written.

use crate::artifacts::{FIELD_FILE, FIELD_INFO, FieldInfo, FieldModel, FieldSpace, PLY_FILE, write_json};
use anyhow::{Context, bail};
use lrf_formats::Camera;
use lrf_formats::scene::Split;
use lrf_formats::views::{Points, ViewSet};
use lrf_nerf::SceneBounds;
use lrf_splat::train::scene_extent;
use rand::seq::SliceRandom;
use std::path::Path;
use tch::{Tensor, nn};

/// The camera of a view seen at 1/`factor` of its size, checked against the target's size.
pub(crate) fn latent_camera(camera: &Camera, factor: usize, target: &Tensor) -> anyhow::Result<Camera> {
    let size = target.size();
    let (w, h) = (camera.width as usize / factor, camera.height as usize / factor);
    if size[1..] != [h as i64, w as i64] || camera.width as usize % factor != 0 || camera.height as usize % factor != 0
    {
        bail!(
            "a {}×{} view and its {:?} target do not match at downsampling {factor}",
            camera.width,
            camera.height,
            size
        );
    }
    Ok(camera.resized(w as u32, h as u32))
}

/// Runs this thread's libtorch operations on one thread while alive. The rasterizer's rayon threads do the heavy
/// work between libtorch's small operations, and libtorch's OpenMP threads would spin-wait for their next
/// region meanwhile, taking the cores the rasterizer needs (a third of a fit's time on 2 cores, measured).
pub struct SingleThreadedLibtorch(i32);

impl SingleThreadedLibtorch {
    pub fn enter() -> Self {
        let previous = tch::get_num_threads();
        tch::set_num_threads(1);
        SingleThreadedLibtorch(previous)
    }
}

impl Drop for SingleThreadedLibtorch {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// At most `limit` entries of `pool` (all when `limit` is 0), evenly spaced: the sample a diagnostic
/// measures on, the same from run to run.
pub(crate) fn spread<T>(pool: &[T], limit: usize) -> Vec<&T> {
    if limit == 0 || pool.len() <= limit {
        return pool.iter().collect();
    }
    (0..limit).map(|i| &pool[i * pool.len() / limit]).collect()
}

/// Whether a parameter is at its type's zero (left out of the canonical parameters).
pub(crate) fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// An exponential moving average of trainable weights (Polyak averaging): a ≈ the mean of the last
/// 1/(1 − decay) steps' weights, which a short schedule of small, noisy batches ends nearer to a minimum
/// than its last step does.
pub(crate) struct WeightAverage {
    decay: f64,
    /// Each trainable variable (sharing its storage) and its average.
    weights: Vec<(Tensor, Tensor)>,
}

impl WeightAverage {
    /// Starts the average at the current weights of every trainable variable in `stores`.
    pub(crate) fn new(stores: &[&nn::VarStore], decay: f64) -> Self {
        let weights = stores
            .iter()
            .flat_map(|vars| vars.trainable_variables())
            .map(|w| {
                let average = w.detach().copy();
                (w, average)
            })
            .collect();
        WeightAverage { decay, weights }
    }

    /// a ← decay·a + (1 − decay)·w, after an optimiser step.
    pub(crate) fn update(&mut self) {
        let _guard = tch::no_grad_guard();
        for (w, average) in &mut self.weights {
            let _ = average.lerp_(w, 1.0 - self.decay);
        }
    }

    /// Writes the averages into the variables.
    pub(crate) fn store(self) {
        let _guard = tch::no_grad_guard();
        for (mut w, average) in self.weights {
            w.copy_(&average);
        }
    }
}

/// Runs `draw` with libtorch's global generator seeded by `seed`, holding a lock that other callers share, so
/// that stages running side by side on worker threads each draw what they would alone.
pub(crate) fn seeded_libtorch<T>(seed: u64, draw: impl FnOnce() -> T) -> T {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed as i64);
    draw()
}

/// The scene extent of a view set's training cameras (see [`scene_extent`]).
pub(crate) fn training_extent(views: &ViewSet) -> anyhow::Result<f64> {
    let cameras: Vec<&Camera> = views
        .views
        .iter()
        .filter(|v| v.split == Split::Train)
        .map(|v| &v.camera)
        .collect();
    scene_extent(&cameras).with_context(|| format!("scene {:?}", views.scene))
}

/// The Tri-Plane box of a scene (in `views_dir`, as `colmap-ingest` writes it): its sparse points and
/// training cameras (see [`SceneBounds::from_scene`]). A scene without sparse points is refused, since they
/// place the box.
pub(crate) fn tri_plane_bounds(views_dir: &Path, views: &ViewSet) -> anyhow::Result<SceneBounds> {
    let points = Points::read(views_dir).with_context(|| format!("scene {:?}", views.scene))?;
    if points.positions.is_empty() {
        bail!(
            "scene {:?} has no sparse points, which place its Tri-Plane's box; ingest a scene with a sparse \
             reconstruction (sparse/0/points3D)",
            views.scene
        );
    }
    let cameras: Vec<Camera> = views
        .indices(Split::Train)
        .into_iter()
        .map(|i| views.views[i].camera.clone())
        .collect();
    Ok(SceneBounds::from_scene(&cameras, &points.positions))
}

/// Training views in a new random order on each pass over them (3DGS's viewpoint stack).
pub(crate) struct ViewOrder {
    count: usize,
    order: Vec<usize>,
}

impl ViewOrder {
    /// `count` must be at least 1.
    pub(crate) fn new(count: usize) -> Self {
        ViewOrder {
            count,
            order: Vec::new(),
        }
    }

    pub(crate) fn next(&mut self, rng: &mut impl rand::Rng) -> usize {
        if self.order.is_empty() {
            self.order = (0..self.count).collect();
            self.order.shuffle(rng);
        }
        self.order.pop().expect("count is at least 1")
    }
}

/// A loss curve: the mean loss over each `every` iterations, and over those before the last one.
pub(crate) struct LossCurve {
    every: u32,
    last: u32,
    sum: f64,
    count: u32,
    /// (iteration, mean loss since the previous entry).
    pub points: Vec<(u32, f64)>,
}

impl LossCurve {
    pub(crate) fn new(every: u32, last: u32) -> Self {
        LossCurve {
            every,
            last,
            sum: 0.0,
            count: 0,
            points: Vec::new(),
        }
    }

    /// Adds one iteration's loss; returns the mean when this iteration closes an entry.
    pub(crate) fn add(&mut self, iteration: u32, loss: f64) -> Option<f64> {
        self.sum += loss;
        self.count += 1;
        if !iteration.is_multiple_of(self.every) && iteration != self.last {
            return None;
        }
        let mean = self.sum / self.count as f64;
        self.points.push((iteration, mean));
        (self.sum, self.count) = (0.0, 0);
        Some(mean)
    }
}

/// Writes a `field` artifact into `out`: the parameters, for Gaussians a PLY that 3DGS viewers open, and the
/// description. A field with a NaN or an infinity is refused: no later stage may take it for a successful fit.
pub(crate) fn write_field(out: &Path, model: &FieldModel, info: &FieldInfo) -> anyhow::Result<()> {
    if info.representation != model.representation() {
        bail!(
            "a {} described as a {}",
            model.representation().name(),
            info.representation.name()
        );
    }
    match model {
        FieldModel::Gaussians(field) => {
            if let Some(group) = field.non_finite_group() {
                bail!("refusing to save a field whose `{group}` parameters hold NaN or infinite values");
            }
            field.save(&out.join(FIELD_FILE))?;
            lrf_formats::ply::write_described_ply(&out.join(PLY_FILE), &field.to_ply()?, &ply_comments(info))?;
        }
        FieldModel::TriPlane(nerf) => {
            if let Some(name) = nerf.non_finite_parameter() {
                bail!("refusing to save a field whose `{name}` parameters hold NaN or infinite values");
            }
            nerf.save(&out.join(FIELD_FILE))?;
        }
    }
    write_json(&out.join(FIELD_INFO), info)
}

/// What a field's PLY holds, for whoever opens it without its `field.json`: a latent field's channels are
/// normalised latents, which only its autoencoder (named with its content hash) decodes, after undoing
/// the per-channel min/max normalisation.
fn ply_comments(info: &FieldInfo) -> Vec<String> {
    let list = |values: &[f32]| values.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(" ");
    let mut comments = vec![format!(
        "lrf-flow field: {} channels, {} Gaussians, {} iterations, 1/{} of image resolution",
        info.channels, info.gaussians, info.iterations, info.downsampling
    )];
    match &info.space {
        FieldSpace::Rgb => {
            comments.push("space rgb: as 3DGS, a rendered channel is 0.5 + the SH sum (f_dc, f_rest)".into())
        }
        FieldSpace::Latent {
            autoencoder,
            normalization,
        } => {
            comments.push(
                "space latent: a rendered channel v = 0.5 + the SH sum (f_dc, f_rest) is a normalised latent; \
                 latent = min + (max - min) * v"
                    .into(),
            );
            comments.push(format!("channels {}", normalization.min.len()));
            comments.push(format!("normalization min {}", list(&normalization.min)));
            comments.push(format!("normalization max {}", list(&normalization.max)));
            comments.push(format!(
                "autoencoder {} content {}",
                autoencoder.name, autoencoder.content
            ));
        }
    }
    comments
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor, nn};

    use super::{WeightAverage, spread};

    #[test]
    fn spread_samples_evenly_and_keeps_small_pools_whole() {
        let pool: Vec<usize> = (0..10).collect();
        assert_eq!(spread(&pool, 3), [&0, &3, &6]);
        assert_eq!(spread(&pool, 4), [&0, &2, &5, &7]);
        assert_eq!(spread(&pool, 0).len(), 10);
        assert_eq!(spread(&pool, 10).len(), 10);
        assert_eq!(spread(&pool[..2], 5), [&0, &1]);
    }

    #[test]
    fn the_weight_average_follows_its_recurrence_and_is_stored() {
        let vars = nn::VarStore::new(Device::Cpu);
        let mut w = vars.root().zeros("w", &[3]);
        let mut average = WeightAverage::new(&[&vars], 0.75);
        let mut expected = [0.0f64; 3];
        for step in 1..=4 {
            let values = [step as f64, -2.0 * step as f64, 0.5];
            tch::no_grad(|| w.copy_(&Tensor::from_slice(&values).to_kind(Kind::Float)));
            average.update();
            for (e, v) in expected.iter_mut().zip(values) {
                *e = 0.75 * *e + 0.25 * v;
            }
        }
        assert_eq!(
            Vec::<f32>::try_from(&w).unwrap(),
            [4.0, -8.0, 0.5],
            "updating leaves the weights alone"
        );
        average.store();
        let stored = Vec::<f64>::try_from(w.to_kind(Kind::Double)).unwrap();
        for (s, e) in stored.iter().zip(expected) {
            assert!((s - e).abs() < 1e-6, "stored {stored:?}, expected {expected:?}");
        }
    }
}
