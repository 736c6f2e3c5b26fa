//! `decoder-align` (Stage III, global over the scenes whose pairs it gets): fine-tunes the decoder only on
//! (rendered latent, real image) pairs from `pair-emit`, so it learns to decode the latents a radiance field
//! actually renders (DESIGN.md §2, LRF eq. 11):
//!
//! L = train_weight·|D(Z_train) − I_train|_1 + novel_weight·|D(Z_novel) − I_novel|_1
//!     + anchor_weight·|D(E(I)) − I|_1
//!
//! with images in [0, 1] and D's output unclamped. The last term is IG-AE's autoencoder preservation: the
//! decoder must still decode the frozen encoder's latents of real images, so that aligning it to a small
//! corpus's renders does not cost the autoencoder its own reconstruction (without it, the decoder drifts
//! toward the corpus's colours). The decoder saved is an exponential moving average of its weights over
//! the steps (`average_decay`). Each step draws `batch` pairs (half train, half novel when
//! a scene set has both) from all scenes, each a random `window`² square of latent pixels (decoded with
//! `context` pixels around it, the loss taken on the square) and the image region
//! it decodes to; pairs of one shape go through the decoder together, the others accumulate gradients. The
//! encoder is frozen and saved unchanged. The output is the whole model as a folder other stages open
//! (`vae-encode`/`evaluate` with `autoencoder: input`), with `training.json` beside it.
//!
//! Corpus size does not limit the defaults' gain: on a held-out training scene (pipelines/corpus-study.yaml)
//! they gain +0.46, +0.50 and +0.50 dB trained on 14, 27 and 51 scenes, and +0.89 dB trained on the held-out
//! scene's own pairs, test views included.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use lrf_graph::{Input, Job, Port, Scope, Signature, StageKind};
use lrf_vae::metrics::psnr;
use lrf_vae::{Autoencoder, Part, TilePlan, decode_tiled, encode_tiled};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor, nn};

use crate::artifacts::{PAIRS_TYPE, PairKind, Pairs};
use crate::artifacts::{output_dir, write_json};
use crate::autoencoder::{AUTOENCODER_TYPE, AutoencoderSource, BUNDLED, autoencoder_port};
use crate::training::{WeightAverage, is_zero, spread};

pub const TRAINING_FILE: &str = "training.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecoderAlign {
    /// The autoencoder whose decoder is aligned: `taef2`, a path (see vae-encode), or `input`: the model on
    /// the `autoencoder` input port (e.g. Stage I's fine-tuned encoder with its decoder).
    pub autoencoder: String,
    /// 300: the schedule measured on the validation split (pipelines/alignment-study.yaml, desk_laptop held
    /// out: +0.48 dB test PSNR with the defaults below). Twice as many (pipelines/decoder-study.yaml, the
    /// 27-scene corpus) gained +0.51 dB against +0.49, for twice the time (about 3 s a step on 2 cores).
    pub steps: u32,
    /// Adam learning rate for the decoder (the paper used 4.5e-6 for Stage I, with large batches). Measured
    /// on the ablation (TAEF2, 300 steps, three training scenes, the bird held out): 1e-4 took test PSNR on the
    /// held-out scene from 24.49 to 23.24 dB and its autoencoder ceiling from 38.1 to 29.0 dB; 1e-5 to 23.95
    /// and 31.6 dB. A small corpus teaches a fast-moving decoder its own colours. With the preservation term
    /// and the 27-scene corpus (pipelines/decoder-study.yaml, desk_laptop held out) 1e-5 is still the best:
    /// +0.49 dB test PSNR and −0.27 dB ceiling, against +0.34 and −2.17 dB at 3e-5, −0.83 and −6.68 dB at 1e-4.
    /// Under the weight average 2e-5 gained +0.54 dB against +0.50, for a ceiling 0.23 dB lower and a worse
    /// ST-LPIPS (0.191 against 0.176): the ceiling is what the evaluation scenes miss, so 1e-5 stays.
    pub lr: f64,
    /// Pairs per step: half training views, half novel views when both exist (an odd count alternates).
    /// 2 (with `anchor_batch` 1) is the validated recipe; 4 + 2 costs twice as much and was not measured.
    pub batch: usize,
    /// 0.5 and 0.5, the paper's. Novel-view pairs only (0 and 1) gained the same on the validation scene
    /// (pipelines/decoder-study.yaml: +0.50 dB either way).
    pub train_weight: f64,
    pub novel_weight: f64,
    /// Weight of the autoencoder-preservation term: L1 between the pairs' images and the decoder's output
    /// for the frozen encoder's latents of the same images (0: off). On the validation scene desk_laptop
    /// (pipelines/alignment-study.yaml, 300 steps on bare 16² crops) 0 took test PSNR from 24.54 to 23.57 dB
    /// and the autoencoder ceiling from 33.20 to 26.34 dB; 1 gave 24.87 and 32.14 dB, and with `context` 8
    /// (batch 2, anchor_batch 1) 25.02 and 33.47 dB. On the ablation's 27-scene corpus
    /// (pipelines/decoder-study.yaml, desk_laptop held out) 1 gave +0.49 dB test PSNR and −0.27 dB ceiling,
    /// 4 gave +0.33 dB and +0.33 dB with a better ST-LPIPS (0.162 against 0.193; the original: 0.118): 1
    /// stays the default, the weight to raise where the autoencoder's own quality matters more.
    pub anchor_weight: f64,
    /// Images per step for the preservation term, drawn from the pairs' images of `anchor_scenes`, each
    /// cropped as the pairs.
    pub anchor_batch: usize,
    /// The scenes (by name) whose images the preservation term draws (empty: every scene's). Name the real
    /// scenes of a corpus that mixes them with generated ones: on pipelines/decoder-study.yaml (24 generated
    /// and 3 real training scenes, desk_laptop held out) the real scenes' images alone gained +0.55 dB test
    /// PSNR and +0.48 dB ceiling, against +0.47 and +0.26 dB with every scene's, at the cost of the generated
    /// scenes' own reconstruction. Left out of the canonical parameters when empty, so the keys of
    /// alignments made before it hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anchor_scenes: Vec<String>,
    /// Decay of an exponential moving average of the decoder's weights, started from the weights before
    /// alignment and saved in place of the last step's (0: off). 0.99 (about the last 100 steps) on
    /// pipelines/decoder-study.yaml (desk_laptop held out, 300 steps, the same training run): +0.47 dB test
    /// PSNR and +0.24 dB ceiling, against +0.49 and −0.27 dB for the last step's weights, with a better
    /// ST-LPIPS (0.175 against 0.193): the same gain for half a dB more of the autoencoder's own quality.
    /// Left out of the canonical parameters when 0, so the keys of alignments made without it hold.
    #[serde(skip_serializing_if = "is_zero")]
    pub average_decay: f64,
    /// Each pair is trained on a random square window of this many latent pixels (0: the whole pair),
    /// decoded with `context` around it. 16 with context 8 (a 32² decode) is the validated recipe; a 32²
    /// window was not measured.
    pub window: i64,
    /// Latent pixels of real context decoded around each window (fewer at the latent's edges); the loss is
    /// taken on the window only. A decoder sees about ±17 latent pixels, so a bare crop decodes in a regime
    /// evaluation never uses. TAEF2 on a real 472×264 image (a generated 384×288 one): a bare 16² crop
    /// decodes 24.6 dB (26.9) from the full decoding of the same region, and 6.9 dB (6.1) further from the
    /// image; a 32² window with 8 pixels of context 38.6 dB, and 0.7 dB. Left out of the canonical parameters
    /// when 0, the bare crops that artifacts made before this option hold.
    #[serde(skip_serializing_if = "is_zero")]
    pub context: i64,
    /// Which of the decoder's layers train, by the resolution they act at as a multiple of the latent's
    /// (TAEF2: 1, 2, 4, 8; see `Autoencoder::decoder_scale`); the others stay frozen. Empty: all of them.
    /// Left out of the canonical parameters when empty, so the keys of alignments made before it hold. On
    /// pipelines/decoder-study.yaml (desk_laptop held out) the latent-side half, [1, 2], gained +0.32 dB
    /// test PSNR with the ceiling +0.23 dB and ST-LPIPS 0.149, and the image-side half, [4, 8], +0.48 dB,
    /// +0.32 dB and 0.175, against +0.47 dB, +0.26 dB and 0.176 for the whole decoder: the image-side half
    /// carries the gain, at no lower cost per step, so the whole decoder stays the default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trained_scales: Vec<i64>,
    /// The L1 before and after training is measured on at most this many pairs of each kind, spread evenly
    /// over all of them (0: every pair).
    pub eval_pairs: usize,
    pub seed: u64,
    pub log_every: u32,
    #[serde(skip_deserializing)]
    pub resolved: Option<AutoencoderSource>,
}

impl Default for DecoderAlign {
    fn default() -> Self {
        DecoderAlign {
            autoencoder: BUNDLED.into(),
            steps: 300,
            lr: 1e-5,
            batch: 2,
            train_weight: 0.5,
            novel_weight: 0.5,
            anchor_weight: 1.0,
            anchor_batch: 1,
            anchor_scenes: Vec::new(),
            average_decay: 0.99,
            window: 16,
            context: 8,
            trained_scales: Vec::new(),
            eval_pairs: 32,
            seed: 0,
            log_every: 100,
            resolved: None,
        }
    }
}

/// A pair by scene (index into the opened pairs) and number within the scene.
#[derive(Debug, Clone, Copy)]
struct PairRef {
    scene: usize,
    k: usize,
}

/// Every pair of the opened scenes, by kind.
struct PairPools {
    train: Vec<PairRef>,
    novel: Vec<PairRef>,
}

impl PairPools {
    fn of(scenes: &[Pairs]) -> Self {
        let (mut train, mut novel) = (Vec::new(), Vec::new());
        for (s, scene) in scenes.iter().enumerate() {
            for (k, pair) in scene.info.pairs.iter().enumerate() {
                match pair.kind {
                    PairKind::Train => train.push(PairRef { scene: s, k }),
                    PairKind::Novel => novel.push(PairRef { scene: s, k }),
                }
            }
        }
        PairPools { train, novel }
    }
}

/// The mean L1 over the pairs of each kind (`None` where there are none).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindL1 {
    pub train: Option<f64>,
    pub novel: Option<f64>,
    /// PSNR (dB, mean over images) of the autoencoder's own reconstruction D(E(I)), clamped to [0, 1], of the
    /// measured pairs' images of both kinds: the ceiling that alignment must not lower.
    pub reconstruction_psnr: Option<f64>,
    /// How many pairs of each kind were measured.
    pub train_pairs: usize,
    pub novel_pairs: usize,
}

/// One logged interval: means over its steps.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CurvePoint {
    pub step: u32,
    pub loss: f64,
    pub train_l1: Option<f64>,
    pub novel_l1: Option<f64>,
    pub anchor_l1: Option<f64>,
}

/// `autoencoder/training.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AlignTraining {
    pub autoencoder: AutoencoderSource,
    pub scenes: Vec<String>,
    pub train_pairs: usize,
    pub novel_pairs: usize,
    pub steps: u32,
    pub seconds: f64,
    pub seconds_per_step: f64,
    /// Whole-pair L1 (decoder output unclamped, tiled decoding) before and after training.
    pub before: KindL1,
    pub after: KindL1,
    pub curve: Vec<CurvePoint>,
}

impl StageKind for DecoderAlign {
    const KIND: &'static str = "decoder-align";
    const VERSION: u32 = 2;

    fn resolve_paths(&mut self, base_dir: &Path) -> Result<(), String> {
        self.resolved = AutoencoderSource::for_parameter(&self.autoencoder, base_dir)?;
        Ok(())
    }
    fn signature(&self) -> Signature {
        let mut inputs = vec![Port::new("pairs", PAIRS_TYPE)];
        inputs.extend(autoencoder_port(&self.autoencoder));
        Signature {
            scope: Scope::Global,
            inputs,
            outputs: vec![Port::new("autoencoder", AUTOENCODER_TYPE)],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.steps == 0 || self.log_every == 0 || self.batch == 0 {
            return Err("steps, log_every and batch must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("lr = {} must be a number > 0", self.lr));
        }
        for (name, value) in [
            ("train_weight", self.train_weight),
            ("novel_weight", self.novel_weight),
            ("anchor_weight", self.anchor_weight),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name} = {value} must be a number ≥ 0"));
            }
        }
        if self.train_weight + self.novel_weight <= 0.0 {
            return Err("train_weight and novel_weight must not both be 0".into());
        }
        if self.window < 0 {
            return Err(format!("window = {} must be ≥ 0 (0: whole pairs)", self.window));
        }
        if self.context < 0 {
            return Err(format!("context = {} must be ≥ 0", self.context));
        }
        if !(0.0..1.0).contains(&self.average_decay) {
            return Err(format!(
                "average_decay = {} must be in [0, 1) (0: off)",
                self.average_decay
            ));
        }
        if let Some(scale) = self.trained_scales.iter().find(|&&s| s < 1 || (s & (s - 1)) != 0) {
            return Err(format!(
                "trained_scales holds {scale}: scales are powers of two from 1 (the latent's resolution)"
            ));
        }
        if self.anchor_weight > 0.0 && self.anchor_batch == 0 {
            return Err("anchor_batch must be at least 1 when anchor_weight > 0".into());
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let source = AutoencoderSource::for_job(self.resolved.as_ref(), job)?;
        let Input::PerScene(dirs) = job.input("pairs")? else {
            bail!("decoder-align input `pairs` must come from a per-scene pair-emit stage");
        };
        let dirs: BTreeMap<_, _> = dirs.iter().collect();
        let mut scenes = Vec::with_capacity(dirs.len());
        for (name, dir) in dirs {
            scenes.push(Pairs::open(dir).with_context(|| format!("the pairs of scene {name:?}"))?);
        }
        let mut model = source.open()?;
        for scene in &scenes {
            let info = &scene.info;
            if info.channels as i64 != model.latent_channels() || info.downsampling as i64 != model.downsampling() {
                bail!(
                    "scene {:?}: the pairs hold {}-channel latents at 1/{} resolution, but autoencoder {:?} has {} \
                     channels at 1/{}; align the autoencoder the field was fitted with",
                    info.scene,
                    info.channels,
                    info.downsampling,
                    source.name,
                    model.latent_channels(),
                    model.downsampling()
                );
            }
            if info.autoencoder.content != source.content {
                tracing::warn!(
                    scene = info.scene,
                    field = info.autoencoder.name,
                    aligning = source.name,
                    "the field was fitted with another autoencoder than the one being aligned"
                );
            }
        }
        let PairPools { train, novel } = PairPools::of(&scenes);
        if train.is_empty() && novel.is_empty() {
            bail!("decoder-align got no pairs; check the stage's roles and the render stage's `splits`");
        }
        let anchors = self.anchor_pool(&scenes, &train, &novel)?;

        model.vars_mut(Part::Encoder).freeze();
        self.freeze_untrained_scales(model.as_ref(), &source.name)?;
        let mut optimizer = nn::Adam::default().build(model.vars(Part::Decoder), self.lr)?;
        let mut average =
            (self.average_decay > 0.0).then(|| WeightAverage::new(&[model.vars(Part::Decoder)], self.average_decay));
        let before = self.measure(model.as_ref(), &scenes, &train, &novel)?;
        tracing::info!(?before, "decoder alignment: L1 before");
        let n_anchor = if self.anchor_weight > 0.0 { self.anchor_batch } else { 0 };
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        tch::manual_seed(self.seed as i64);
        let started = Instant::now();
        let mut curve = Vec::new();
        let mut interval = Interval::default();
        for step in 1..=self.steps {
            let (n_train, n_novel) = match (train.is_empty(), novel.is_empty()) {
                (false, false) => {
                    let n_train = (self.batch + (step as usize % 2)) / 2;
                    (n_train, self.batch - n_train)
                }
                (false, true) => (self.batch, 0),
                _ => (0, self.batch),
            };
            let mut chosen = Vec::with_capacity(self.batch + self.anchor_batch);
            for (pool, n, role, weight) in [
                (&train, n_train, Role::Train, self.train_weight),
                (&novel, n_novel, Role::Novel, self.novel_weight),
                (&anchors, n_anchor, Role::Anchor, self.anchor_weight),
            ] {
                for pair in draw(pool, n, &mut rng) {
                    chosen.push((pair, role, weight / n as f64));
                }
            }
            let measured = self.step(model.as_ref(), &scenes, &chosen, &mut rng, &mut optimizer)?;
            if let Some(average) = &mut average {
                average.update();
            }
            interval.add(&measured);
            if step % self.log_every == 0 || step == self.steps {
                let point = interval.point(step);
                tracing::info!(stage = job.stage_id, step, loss = point.loss, "decoder alignment");
                job.status(&format!("step {step}/{}, loss {:.4}", self.steps, point.loss));
                curve.push(point);
                interval = Interval::default();
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if let Some(average) = average {
            average.store();
        }
        let after = self.measure(model.as_ref(), &scenes, &train, &novel)?;
        tracing::info!(?after, "decoder alignment: L1 after");

        let out = output_dir(job, "autoencoder")?;
        model.save_folder(&out).context("saving the aligned autoencoder")?;
        write_json(
            &out.join(TRAINING_FILE),
            &AlignTraining {
                autoencoder: source,
                scenes: scenes.iter().map(|s| s.info.scene.clone()).collect(),
                train_pairs: train.len(),
                novel_pairs: novel.len(),
                steps: self.steps,
                seconds,
                seconds_per_step: seconds / self.steps as f64,
                before,
                after,
                curve,
            },
        )
    }
}

impl DecoderAlign {
    /// The pairs whose images the preservation term draws: those of `anchor_scenes`, or all of them.
    fn anchor_pool(&self, scenes: &[Pairs], train: &[PairRef], novel: &[PairRef]) -> anyhow::Result<Vec<PairRef>> {
        let names: Vec<&str> = scenes.iter().map(|s| s.info.scene.as_str()).collect();
        if let Some(missing) = self.anchor_scenes.iter().find(|a| !names.contains(&a.as_str())) {
            bail!(
                "anchor_scenes names {missing:?}, which has no pairs in this alignment; its scenes are {}",
                names.join(", ")
            );
        }
        let anchored = |pair: &&PairRef| {
            self.anchor_scenes.is_empty() || self.anchor_scenes.contains(&scenes[pair.scene].info.scene)
        };
        let pool: Vec<PairRef> = train.iter().chain(novel).filter(anchored).copied().collect();
        if pool.is_empty() && self.anchor_weight > 0.0 {
            bail!(
                "anchor_scenes {} hold no pairs, so the preservation term has no images; name scenes with \
                 pairs, or set anchor_weight to 0",
                self.anchor_scenes.join(", ")
            );
        }
        Ok(pool)
    }

    /// Stops gradients to the decoder parameters outside `trained_scales`: the optimiser skips them, and
    /// the backward pass ends at the first layer that trains.
    fn freeze_untrained_scales(&self, model: &dyn Autoencoder, name: &str) -> anyhow::Result<()> {
        if self.trained_scales.is_empty() {
            return Ok(());
        }
        let mut trained = BTreeMap::<i64, usize>::new();
        for (variable, tensor) in model.vars(Part::Decoder).variables() {
            let Some(scale) = model.decoder_scale(&variable) else {
                bail!("autoencoder {name:?} cannot say at which resolution its decoder parameter {variable:?} acts");
            };
            if self.trained_scales.contains(&scale) {
                *trained.entry(scale).or_default() += 1;
            } else {
                let _ = tensor.set_requires_grad(false);
            }
        }
        if let Some(missing) = self.trained_scales.iter().find(|s| !trained.contains_key(s)) {
            bail!(
                "trained_scales names {missing}, but no decoder layer of {name:?} acts at {missing}× the latent's \
                 resolution; its decoder's scales run from 1 to {}",
                model.downsampling()
            );
        }
        tracing::info!(?trained, "decoder alignment: parameters trained, by scale");
        Ok(())
    }
}

/// `n` pairs of `pool`: distinct when the pool is large enough, with repeats otherwise.
fn draw(pool: &[PairRef], n: usize, rng: &mut ChaCha8Rng) -> Vec<PairRef> {
    if n <= pool.len() {
        pool.choose_multiple(rng, n).copied().collect()
    } else {
        (0..n).map(|_| pool[rng.random_range(0..pool.len())]).collect()
    }
}

/// What a sample of a step trains: a training-view pair, a novel-view pair, or the autoencoder-preservation
/// term on a pair's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Train,
    Novel,
    Anchor,
}

/// One sample of a step: the (cropped) latent it decodes, its image, its role and its weight in the loss.
struct Sample {
    crop: Crop,
    role: Role,
    weight: f64,
}

/// A latent to decode, the image region it decodes to, and the part of it the loss is taken on:
/// `[top, left, height, width]` in image pixels.
struct Crop {
    z: Tensor,
    image: Tensor,
    inner: [i64; 4],
}

impl Crop {
    fn inner(&self, image: &Tensor) -> Tensor {
        let [top, left, height, width] = self.inner;
        image.narrow(-2, top, height).narrow(-1, left, width)
    }
}

/// What one step measured: the weighted loss and each sample's L1 by role.
#[derive(Debug, Default)]
struct StepValues {
    loss: f64,
    l1: Vec<(Role, f64)>,
}

#[derive(Debug, Default)]
struct Interval {
    steps: u32,
    loss: f64,
    train: (f64, usize),
    novel: (f64, usize),
    anchor: (f64, usize),
}

impl Interval {
    fn add(&mut self, values: &StepValues) {
        self.steps += 1;
        self.loss += values.loss;
        for &(role, l1) in &values.l1 {
            let slot = match role {
                Role::Train => &mut self.train,
                Role::Novel => &mut self.novel,
                Role::Anchor => &mut self.anchor,
            };
            slot.0 += l1;
            slot.1 += 1;
        }
    }

    fn point(&self, step: u32) -> CurvePoint {
        let mean = |(sum, n): (f64, usize)| (n > 0).then(|| sum / n as f64);
        CurvePoint {
            step,
            loss: self.loss / self.steps.max(1) as f64,
            train_l1: mean(self.train),
            novel_l1: mean(self.novel),
            anchor_l1: mean(self.anchor),
        }
    }
}

impl DecoderAlign {
    /// One optimiser step over `chosen` (pair, role, weight): samples whose windows have one shape are decoded
    /// as one batch; the gradients of the batches add up before the step. Anchor samples decode the frozen
    /// encoder's latent of the image crop instead of the pair's rendered latent.
    fn step(
        &self,
        model: &dyn Autoencoder,
        scenes: &[Pairs],
        chosen: &[(PairRef, Role, f64)],
        rng: &mut ChaCha8Rng,
        optimizer: &mut nn::Optimizer,
    ) -> anyhow::Result<StepValues> {
        let factor = model.downsampling();
        let mut groups: BTreeMap<Vec<i64>, Vec<Sample>> = BTreeMap::new();
        for &(pair, role, weight) in chosen {
            let pairs = &scenes[pair.scene];
            let mut crop = self.crop(&pairs.latent(pair.k)?, &pairs.image(pair.k)?, factor, rng);
            if role == Role::Anchor {
                crop.z = encode_unit(model, &crop.image)?;
            }
            groups
                .entry(crop.z.size())
                .or_default()
                .push(Sample { crop, role, weight });
        }
        optimizer.zero_grad();
        let mut values = StepValues::default();
        for group in groups.values() {
            let z = Tensor::stack(&group.iter().map(|g| &g.crop.z).collect::<Vec<_>>(), 0);
            let decoded = model.input_range().to_unit(&model.decode(&z)?);
            let l1 = Tensor::stack(
                &group
                    .iter()
                    .enumerate()
                    .map(|(k, g)| {
                        (g.crop.inner(&decoded.get(k as i64)) - g.crop.inner(&g.crop.image))
                            .abs()
                            .mean(Kind::Float)
                    })
                    .collect::<Vec<_>>(),
                0,
            );
            let weights: Vec<f32> = group.iter().map(|g| g.weight as f32).collect();
            let loss = (&l1 * Tensor::from_slice(&weights)).sum(Kind::Float);
            loss.backward();
            values.loss += loss.double_value(&[]);
            let l1 = Vec::<f64>::try_from(l1.detach().to_kind(Kind::Double))?;
            values.l1.extend(group.iter().map(|g| g.role).zip(l1));
        }
        optimizer.step();
        if !values.loss.is_finite() {
            bail!("the decoder-align loss became {}; lower lr", values.loss);
        }
        Ok(values)
    }

    /// A random `window`² square of a `[C, h, w]` latent with up to `context` latent pixels around it (less at
    /// the latent's edges), the `[3, H, W]` image region it decodes to, and where the square lies in that
    /// region, in image pixels.
    fn crop(&self, z: &Tensor, image: &Tensor, factor: i64, rng: &mut ChaCha8Rng) -> Crop {
        let (h, w) = (z.size()[1], z.size()[2]);
        let size = self.window;
        let (wh, ww) = if size == 0 { (h, w) } else { (size.min(h), size.min(w)) };
        let (top, left) = (rng.random_range(0..=h - wh), rng.random_range(0..=w - ww));
        let (context_top, context_left) = ((top - self.context).max(0), (left - self.context).max(0));
        let context_height = (top + wh + self.context).min(h) - context_top;
        let context_width = (left + ww + self.context).min(w) - context_left;
        Crop {
            z: z.narrow(1, context_top, context_height)
                .narrow(2, context_left, context_width),
            image: image.narrow(1, context_top * factor, context_height * factor).narrow(
                2,
                context_left * factor,
                context_width * factor,
            ),
            inner: [
                (top - context_top) * factor,
                (left - context_left) * factor,
                wh * factor,
                ww * factor,
            ],
        }
    }

    /// The mean whole-pair L1 of each kind over at most `eval_pairs` pairs, spread evenly.
    fn measure(
        &self,
        model: &dyn Autoencoder,
        scenes: &[Pairs],
        train: &[PairRef],
        novel: &[PairRef],
    ) -> anyhow::Result<KindL1> {
        let _guard = tch::no_grad_guard();
        let mean = |pool: &[PairRef]| -> anyhow::Result<(Option<f64>, usize)> {
            let chosen = spread(pool, self.eval_pairs);
            let mut total = 0.0;
            for pair in &chosen {
                let pairs = &scenes[pair.scene];
                let decoded = decode_tiled(model, &pairs.latent(pair.k)?.unsqueeze(0), TilePlan::default())?;
                let decoded = model.input_range().to_unit(&decoded).squeeze_dim(0);
                total += (decoded - pairs.image(pair.k)?)
                    .abs()
                    .mean(Kind::Float)
                    .double_value(&[]);
            }
            Ok(((!chosen.is_empty()).then(|| total / chosen.len() as f64), chosen.len()))
        };
        let mut measured: Vec<&PairRef> = spread(train, self.eval_pairs);
        measured.extend(spread(novel, self.eval_pairs));
        let (train, train_pairs) = mean(train)?;
        let (novel, novel_pairs) = mean(novel)?;
        let mut total = 0.0;
        for pair in &measured {
            let image = scenes[pair.scene].image(pair.k)?;
            total += psnr(&reconstruct_tiled(model, &image)?.clamp(0.0, 1.0), &image)?;
        }
        Ok(KindL1 {
            train,
            novel,
            reconstruction_psnr: (!measured.is_empty()).then(|| total / measured.len() as f64),
            train_pairs,
            novel_pairs,
        })
    }
}

/// The frozen encoder's latent (posterior mean) of a `[3, H, W]` image in [0, 1], without gradients.
fn encode_unit(model: &dyn Autoencoder, image: &Tensor) -> anyhow::Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let pixels = model.input_range().from_unit(&image.unsqueeze(0));
    Ok(model.encode(&pixels)?.mean.squeeze_dim(0).to_kind(Kind::Float))
}

/// D(E(image)) of a `[3, H, W]` image in [0, 1], tiled as evaluation encodes and decodes.
fn reconstruct_tiled(model: &dyn Autoencoder, image: &Tensor) -> anyhow::Result<Tensor> {
    let pixels = model.input_range().from_unit(&image.unsqueeze(0));
    let z = encode_tiled(model, &pixels, TilePlan::default())?.mean;
    let decoded = decode_tiled(model, &z, TilePlan::default())?;
    Ok(model.input_range().to_unit(&decoded).squeeze_dim(0))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use lrf_formats::scene::Split;
    use lrf_formats::shard::{ShardReader, write_tch_shard};
    use lrf_formats::views::{IMAGES_FILE, read_image, view_key};
    use lrf_vae::{TinyAutoencoder, open_autoencoder};
    use serde_json::json;
    use tch::Device;

    use super::*;
    use crate::artifacts::{Evaluation, METRICS_FILE};
    use crate::artifacts::{FieldInfo, FieldSpace, Normalization, RendersInfo, Representation, read_json};
    use crate::artifacts::{PAIRS_FILE, PAIRS_INFO, PairsInfo};
    use crate::artifacts::{RENDERS_FILE, RENDERS_INFO};
    use crate::evaluate::Evaluate;
    use crate::latents::encode_view;
    use crate::pairs::PairEmit;
    use crate::test_support::{run_stage, stage, views_fixture};

    const SPLITS: [Split; 4] = [Split::Test, Split::Train, Split::Train, Split::Test];

    /// A 4-view 64×48 scene (`views`) and a hand-made latent `renders` artifact: TAEF2 latents of the images,
    /// scaled, shifted and noised, so the decoder has something to learn. `space` overrides the field space.
    fn fixture(dir: &Path, rgb: bool, downsampling: usize) -> (PathBuf, PathBuf) {
        let (views_dir, images) = views_fixture(dir, &SPLITS);

        let renders_dir = dir.join("renders");
        std::fs::create_dir_all(&renders_dir).unwrap();
        let model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
        let shard = ShardReader::open(&views_dir.join(IMAGES_FILE)).unwrap();
        tch::manual_seed(7);
        let renders: Vec<Tensor> = (0..SPLITS.len())
            .map(|i| {
                if rgb {
                    return crate::latents::image_tensor(&images[i]);
                }
                let z = tch::no_grad(|| encode_view(&model, &shard, i)).unwrap();
                &z * 0.7 + 0.3 + z.randn_like() * 0.1
            })
            .collect();
        let all = Tensor::stack(&renders, 0);
        let channels = all.size()[1];
        let to_vec = |t: Tensor| Vec::<f32>::try_from(t).unwrap();
        let normalization = Normalization {
            min: to_vec(all.amin(&[0i64, 2, 3][..], false)),
            max: to_vec(all.amax(&[0i64, 2, 3][..], false)),
        };
        let names: Vec<String> = (0..SPLITS.len()).map(view_key).collect();
        let tensors: Vec<(&str, &Tensor)> = names.iter().map(String::as_str).zip(&renders).collect();
        write_tch_shard(&renders_dir.join(RENDERS_FILE), &tensors, &HashMap::new()).unwrap();
        let space = if rgb {
            FieldSpace::Rgb
        } else {
            FieldSpace::Latent {
                autoencoder: AutoencoderSource::resolve(BUNDLED, dir).unwrap(),
                normalization,
            }
        };
        let field = FieldInfo {
            space,
            representation: Representation::Gaussians,
            channels: channels as usize,
            downsampling: if rgb { 1 } else { 8 },
            gaussians: 0,
            iterations: 0,
            seconds: 0.0,
            seconds_per_iteration: 0.0,
            peak_memory_mib: None,
            loss_curve: vec![],
            gaussian_curve: vec![],
        };
        let info = RendersInfo {
            field,
            views: (0..SPLITS.len()).collect(),
            downsampling,
            seconds_per_view: 0.0,
        };
        write_json(&renders_dir.join(RENDERS_INFO), &info).unwrap();
        (views_dir, renders_dir)
    }

    fn one(path: &Path) -> Input {
        Input::One(path.to_path_buf())
    }

    #[test]
    fn pair_emit_then_decoder_align_trains_the_decoder_only_and_evaluate_can_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        // One libtorch thread (for this test's thread only): on a small, busy machine OpenMP's spin-waiting
        // makes these tiny convolutions several times slower.
        tch::set_num_threads(1);
        let (views, renders) = fixture(base, false, 8);

        let emit: PairEmit = stage(json!({}), base);
        let emitted = base.join("emit");
        run_stage(&emit, &[("renders", one(&renders)), ("views", one(&views))], &emitted).unwrap();
        let info: PairsInfo = read_json(&emitted.join("pairs").join(PAIRS_INFO)).unwrap();
        assert_eq!(info.scene, "s");
        let kinds: Vec<PairKind> = info.pairs.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [PairKind::Novel, PairKind::Train, PairKind::Train, PairKind::Novel]
        );
        assert_eq!(info.pairs[1].latent_shape, [32, 6, 8]);
        assert_eq!(info.pairs[1].image_shape, [3, 48, 64]);
        let shard = ShardReader::open(&emitted.join("pairs").join(PAIRS_FILE)).unwrap();
        assert_eq!(shard.tensor("image_0002").unwrap().kind(), Kind::Uint8);
        assert_eq!(shard.tensor("latent_0003").unwrap().kind(), Kind::Float);

        let align: DecoderAlign = stage(
            json!({"steps": 30, "lr": 1e-3, "batch": 2, "log_every": 10, "eval_pairs": 0, "seed": 1,
                   "average_decay": 0}),
            base,
        );
        let aligned = base.join("align");
        let pairs = Input::PerScene([("s".to_string(), emitted.join("pairs"))].into());
        run_stage(&align, &[("pairs", pairs.clone())], &aligned).unwrap();
        let folder = aligned.join("autoencoder");
        let training: serde_json::Value = read_json(&folder.join(TRAINING_FILE)).unwrap();
        let value = |path: &str| training.pointer(path).and_then(|v| v.as_f64()).unwrap();
        let (before, after) = (value("/before/train"), value("/after/train"));
        let (novel_before, novel_after) = (value("/before/novel"), value("/after/novel"));
        assert!(after < 0.9 * before, "train L1 {before} → {after}\n{training}");
        assert!(
            novel_after < novel_before,
            "novel L1 {novel_before} → {novel_after}\n{training}"
        );
        assert_eq!(training["curve"].as_array().unwrap().len(), 3, "{training}");
        assert_eq!(
            (training["train_pairs"].as_u64(), training["novel_pairs"].as_u64()),
            (Some(2), Some(2))
        );

        // The saved model re-opens; its encoder is TAEF2's bit for bit, its decoder is not.
        let reopened = open_autoencoder(&folder, Device::Cpu).unwrap();
        let original = TinyAutoencoder::taef2(Device::Cpu).unwrap();
        let same = |part: Part| -> Vec<bool> {
            let ours = reopened.vars(part).variables();
            let theirs = original.vars(part).variables();
            assert_eq!(ours.len(), theirs.len());
            ours.iter().map(|(name, t)| t.equal(&theirs[name])).collect()
        };
        assert!(same(Part::Encoder).iter().all(|&s| s), "the encoder changed");
        assert!(same(Part::Decoder).iter().any(|&s| !s), "the decoder did not change");

        // The same run with a weight average saves the average: a decoder between the original and the
        // last step's (the average starts at the original weights).
        let averaging: DecoderAlign = stage(
            json!({"steps": 30, "lr": 1e-3, "batch": 2, "log_every": 10, "eval_pairs": 0, "seed": 1,
                   "average_decay": 0.95}),
            base,
        );
        run_stage(&averaging, &[("pairs", pairs.clone())], &base.join("align-averaged")).unwrap();
        let averaged = open_autoencoder(&base.join("align-averaged").join("autoencoder"), Device::Cpu).unwrap();
        let moved = |model: &dyn Autoencoder| -> f64 {
            let theirs = original.vars(Part::Decoder).variables();
            let squares: f64 = model
                .vars(Part::Decoder)
                .variables()
                .iter()
                .map(|(name, t)| (t - &theirs[name]).square().sum(Kind::Double).double_value(&[]))
                .sum();
            squares.sqrt()
        };
        let (last, average) = (moved(reopened.as_ref()), moved(averaged.as_ref()));
        eprintln!("the decoder moved {average} with the average, {last} without");
        assert!(
            average > 0.0 && average < 0.9 * last,
            "the decoder moved {average} with the average, {last} without"
        );
        // Training only the layers at 8× the latent's resolution leaves every other layer bit for bit; a scale
        // the decoder lacks is an error that says which it has.
        let image_side: DecoderAlign = stage(
            json!({"steps": 5, "lr": 1e-3, "batch": 2, "log_every": 5, "eval_pairs": 0, "seed": 1,
                   "average_decay": 0, "trained_scales": [8]}),
            base,
        );
        run_stage(&image_side, &[("pairs", pairs.clone())], &base.join("align-image-side")).unwrap();
        let image_side = open_autoencoder(&base.join("align-image-side").join("autoencoder"), Device::Cpu).unwrap();
        let theirs = original.vars(Part::Decoder).variables();
        let mut changed_at_8 = 0;
        for (name, t) in image_side.vars(Part::Decoder).variables() {
            let scale = original.decoder_scale(&name).unwrap();
            let unchanged = t.equal(&theirs[&name]);
            assert!(unchanged || scale == 8, "{name} (scale {scale}) changed");
            changed_at_8 += usize::from(!unchanged);
        }
        assert!(changed_at_8 > 0, "no layer at scale 8 changed");
        let too_fine: DecoderAlign = stage(json!({"steps": 1, "eval_pairs": 0, "trained_scales": [16]}), base);
        let error = run_stage(&too_fine, &[("pairs", pairs.clone())], &base.join("align-16")).unwrap_err();
        assert!(format!("{error:#}").contains("scales run from 1 to 8"), "{error:#}");

        let z = Pairs::open(&emitted.join("pairs"))
            .unwrap()
            .latent(0)
            .unwrap()
            .unsqueeze(0);
        assert_eq!(reopened.decode(&z).unwrap().size(), [1, 3, 48, 64]);

        // evaluate with `autoencoder: input` decodes with the aligned model: better on the training pairs.
        let evaluate = |params: serde_json::Value, inputs: &[(&str, Input)], name: &str| -> Evaluation {
            let stage: Evaluate = stage(params, base);
            let ports: Vec<String> = stage.signature().inputs.iter().map(|p| p.name.clone()).collect();
            assert_eq!(ports.len(), inputs.len(), "{ports:?}");
            run_stage(&stage, inputs, &base.join(name)).unwrap();
            read_json(&base.join(name).join("evaluation").join(METRICS_FILE)).unwrap()
        };
        let common = [("renders", one(&renders)), ("views", one(&views))];
        let field = evaluate(json!({"splits": ["train"], "images": false}), &common, "eval-field");
        let mut with_input = common.to_vec();
        with_input.push(("autoencoder", one(&folder)));
        let input = evaluate(
            json!({"splits": ["train"], "images": false, "autoencoder": "input"}),
            &with_input,
            "eval-input",
        );
        let (field_psnr, input_psnr) = (field.summary[0].render.psnr, input.summary[0].render.psnr);
        assert!(
            input_psnr > field_psnr,
            "PSNR with the field's decoder {field_psnr}, aligned {input_psnr}"
        );
        // The reconstruction ceiling uses the given model too.
        let ceiling = |e: &Evaluation| e.summary[0].reconstruction.as_ref().unwrap().psnr;
        assert_ne!(ceiling(&field), ceiling(&input));
    }

    /// The preservation term does its job. The renders here are the encoder's latents of the images with red
    /// and blue swapped, a systematic difference like a corpus's colour cast: aligning to them teaches the
    /// decoder to swap colours. Without the anchor that costs the autoencoder its own reconstruction; with it,
    /// much less, while the pairs are still learned.
    #[test]
    fn the_anchor_keeps_the_autoencoder_reconstruction() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        tch::set_num_threads(1);
        let (views, renders) = fixture(base, false, 8);
        let model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
        let images = ShardReader::open(&views.join(IMAGES_FILE)).unwrap();
        let swapped: Vec<Tensor> = (0..SPLITS.len())
            .map(|i| {
                let image = crate::latents::image_tensor(&read_image(&images, i).unwrap()).flip([0]);
                encode_unit(&model, &image).unwrap()
            })
            .collect();
        let names: Vec<String> = (0..SPLITS.len()).map(view_key).collect();
        let tensors: Vec<(&str, &Tensor)> = names.iter().map(String::as_str).zip(&swapped).collect();
        write_tch_shard(&renders.join(RENDERS_FILE), &tensors, &HashMap::new()).unwrap();
        let emit: PairEmit = stage(json!({}), base);
        let emitted = base.join("emit");
        run_stage(&emit, &[("renders", one(&renders)), ("views", one(&views))], &emitted).unwrap();
        let pairs = Input::PerScene([("s".to_string(), emitted.join("pairs"))].into());
        let drift = |anchor_weight: f64| -> (f64, f64) {
            let align: DecoderAlign = stage(
                json!({"steps": 100, "lr": 1e-3, "batch": 2, "log_every": 50, "eval_pairs": 0, "seed": 1,
                       "anchor_weight": anchor_weight, "anchor_batch": 2, "average_decay": 0}),
                base,
            );
            let out = base.join(format!("align-{anchor_weight}"));
            run_stage(&align, &[("pairs", pairs.clone())], &out).unwrap();
            let training: serde_json::Value = read_json(&out.join("autoencoder").join(TRAINING_FILE)).unwrap();
            let value = |path: &str| training.pointer(path).and_then(|v| v.as_f64()).unwrap();
            (
                value("/before/reconstruction_psnr") - value("/after/reconstruction_psnr"),
                value("/after/train"),
            )
        };
        let (free_drift, free_train) = drift(0.0);
        let (anchored_drift, anchored_train) = drift(1.0);
        eprintln!("reconstruction drift: {free_drift} dB without the anchor, {anchored_drift} dB with it");
        assert!(
            free_drift > 1.0,
            "without the anchor the reconstruction moved only {free_drift} dB"
        );
        assert!(
            anchored_drift < 0.5 * free_drift,
            "reconstruction loss: {anchored_drift} dB with the anchor, {free_drift} dB without"
        );
        // The alignment itself still happens.
        assert!(
            anchored_train < 1.5 * free_train,
            "train L1 {anchored_train} vs {free_train}"
        );
    }

    /// `anchor_scenes` limits the preservation term's images to the scenes it names, and refuses a name with
    /// no pairs.
    #[test]
    fn anchor_scenes_choose_the_preservation_images() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let (views, renders) = fixture(base, false, 8);
        let emit: PairEmit = stage(json!({}), base);
        let emitted = base.join("emit");
        run_stage(&emit, &[("renders", one(&renders)), ("views", one(&views))], &emitted).unwrap();
        let mut scenes = vec![
            Pairs::open(&emitted.join("pairs")).unwrap(),
            Pairs::open(&emitted.join("pairs")).unwrap(),
        ];
        scenes[1].info.scene = "photos".into();
        let PairPools { train, novel } = PairPools::of(&scenes);
        let pool = |names: &[&str]| {
            let align = DecoderAlign {
                anchor_scenes: names.iter().map(|n| n.to_string()).collect(),
                ..DecoderAlign::default()
            };
            align.anchor_pool(&scenes, &train, &novel)
        };
        let every = pool(&[]).unwrap();
        assert_eq!(every.len(), train.len() + novel.len());
        let photos = pool(&["photos"]).unwrap();
        assert_eq!(2 * photos.len(), every.len());
        assert!(photos.iter().all(|pair| pair.scene == 1));
        let error = pool(&["photos", "absent"]).unwrap_err().to_string();
        assert!(error.contains("\"absent\"") && error.contains("photos"), "{error}");
        // A named scene without pairs would leave the term nothing to draw.
        scenes[1].info.pairs.clear();
        let PairPools { train, novel } = PairPools::of(&scenes);
        let align = DecoderAlign {
            anchor_scenes: vec!["photos".into()],
            ..DecoderAlign::default()
        };
        let error = align.anchor_pool(&scenes, &train, &novel).unwrap_err().to_string();
        assert!(error.contains("no pairs"), "{error}");
    }

    /// Crops carry their context inside the latent, and the loss region is the window's image region.
    #[test]
    fn crops_carry_context_and_the_window_is_where_the_loss_is_taken() {
        let (h, w, factor) = (10i64, 12i64, 8i64);
        // Latent pixel (y, x) holds y·100 + x; image pixel (Y, X) holds (Y/8)·100 + X/8: its latent pixel.
        let z = (Tensor::arange(h, (Kind::Float, Device::Cpu)).view([1, h, 1]) * 100.0
            + Tensor::arange(w, (Kind::Float, Device::Cpu)).view([1, 1, w]))
        .repeat([2, 1, 1]);
        let image = z
            .repeat_interleave_self_int(factor, 1, None)
            .repeat_interleave_self_int(factor, 2, None);
        let align = DecoderAlign {
            window: 4,
            context: 3,
            ..DecoderAlign::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut clipped = 0;
        for _ in 0..200 {
            let crop = align.crop(&z, &image, factor, &mut rng);
            let [top, left, height, width] = crop.inner;
            assert_eq!((height, width), (4 * factor, 4 * factor));
            let (zh, zw) = (crop.z.size()[1], crop.z.size()[2]);
            assert!((4..=10).contains(&zh) && (4..=10).contains(&zw));
            clipped += usize::from(zh < 10 || zw < 10);
            assert_eq!(crop.image.size()[1..], [zh * factor, zw * factor]);
            // The image region is the one the latent crop decodes to, pixel block by pixel block.
            let upsampled = crop
                .z
                .repeat_interleave_self_int(factor, 1, None)
                .repeat_interleave_self_int(factor, 2, None);
            assert!(upsampled.equal(&crop.image));
            // The window sits `context` inside the crop, or at the latent's edge.
            let (window_top, window_left) = (top / factor, left / factor);
            assert!(window_top == 3 || zh < 10 && window_top < 3, "{window_top} in {zh}");
            assert!(window_left == 3 || zw < 10 && window_left < 3, "{window_left} in {zw}");
        }
        assert!(clipped > 0, "no crop met the latent's edge");
    }

    #[test]
    fn pair_emit_refuses_rgb_renders_and_renders_not_at_trained_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let emit: PairEmit = stage(json!({}), dir.path());
        let (views, renders) = fixture(&dir.path().join("rgb"), true, 1);
        let error = run_stage(
            &emit,
            &[("renders", one(&renders)), ("views", one(&views))],
            &dir.path().join("a"),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("RGB field"), "{error:#}");
        let (views, renders) = fixture(&dir.path().join("full"), false, 1);
        let error = run_stage(
            &emit,
            &[("renders", one(&renders)), ("views", one(&views))],
            &dir.path().join("b"),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("resolution: trained"), "{error:#}");
    }

    #[test]
    fn ports_follow_the_autoencoder_parameter_and_evaluate_keeps_its_default_parameters() {
        let base = Path::new("/tmp");
        let ports = |s: Signature| -> Vec<(String, String)> { s.inputs.into_iter().map(|p| (p.name, p.ty)).collect() };
        let from_input: DecoderAlign = stage(json!({"autoencoder": "input"}), base);
        assert_eq!(
            ports(from_input.signature()),
            [
                ("pairs".into(), "pairs".into()),
                ("autoencoder".into(), "autoencoder".into())
            ]
        );
        let bundled: DecoderAlign = stage(json!({}), base);
        assert_eq!(ports(bundled.signature()), [("pairs".into(), "pairs".into())]);
        assert_eq!(bundled.signature().scope, Scope::Global);
        for bad in [
            json!({"batch": 0}),
            json!({"lr": 0.0}),
            json!({"train_weight": 0, "novel_weight": 0}),
            json!({"trained_scales": [3]}),
            json!({"trained_scales": [0]}),
        ] {
            let stage: DecoderAlign = serde_json::from_value(bad.clone()).unwrap();
            assert!(stage.validate().is_err(), "{bad}");
        }

        // Bare crops (context 0) keep the parameters, and so the keys, of alignments made before `context`.
        let bare: DecoderAlign = stage(json!({"context": 0}), base);
        assert!(lrf_graph::Stage::params(&bare).unwrap().get("context").is_none());
        assert_eq!(lrf_graph::Stage::params(&bundled).unwrap()["context"], 8);
        // So does training every layer.
        assert!(
            lrf_graph::Stage::params(&bundled)
                .unwrap()
                .get("trained_scales")
                .is_none()
        );

        let evaluate: Evaluate = stage(json!({"autoencoder": "input"}), base);
        assert!(ports(evaluate.signature()).contains(&("autoencoder".into(), "autoencoder".into())));
        // The default is left out of the canonical parameters, so earlier evaluation keys still hold.
        let default = lrf_graph::Stage::params(&Evaluate::default()).unwrap();
        assert!(default.get("autoencoder").is_none(), "{default}");
        assert_eq!(lrf_graph::Stage::params(&evaluate).unwrap()["autoencoder"], "input");
    }
}
