//! The KL autoencoder of latent diffusion (LDM's `AutoencoderKL`, diffusers' `AutoencoderKL`):
//! Stable Diffusion's kl-f8, kl-f8-d16 and the LRF authors' fine-tuned checkpoint. One model, two key
//! layouts on disk: diffusers (`encoder.down_blocks.N.resnets.M…`) and LDM/CompVis
//! (`encoder.down.N.block.M…`, attention projections as 1×1 convolutions).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn};

use crate::checkpoint::{Checkpoint, write_vars};
use crate::error::{Result, VaeError};
use crate::layers::{conv, group_norm};
use crate::{Autoencoder, InputRange, Part, Posterior, check_nchw};

/// Every GroupNorm in the model uses this epsilon (diffusers' `resnet_eps`, LDM's `Normalize`).
const NORM_EPS: f64 = 1e-6;

/// The encoder level types: plain, or with self-attention after each resnet (LDM's `attn_resolutions`).
const DOWN_BLOCK: &str = "DownEncoderBlock2D";
const ATTN_DOWN_BLOCK: &str = "AttnDownEncoderBlock2D";
/// The decoder level types, likewise.
const UP_BLOCK: &str = "UpDecoderBlock2D";
const ATTN_UP_BLOCK: &str = "AttnUpDecoderBlock2D";

/// The architecture, with the names and defaults of diffusers' `config.json` (unknown fields ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KlConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: i64,
    pub latent_channels: i64,
    pub norm_num_groups: i64,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
    pub act_fn: String,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    /// Recorded for users; lrf-flow keeps latents at the raw scale and never applies it.
    pub scaling_factor: f64,
}

impl Default for KlConfig {
    /// diffusers' defaults, which are not SD's: see [`KlConfig::sd_kl_f8`].
    fn default() -> Self {
        KlConfig {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![64],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 32,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            act_fn: "silu".into(),
            down_block_types: vec![DOWN_BLOCK.into()],
            up_block_types: vec![UP_BLOCK.into()],
            scaling_factor: 0.18215,
        }
    }
}

impl KlConfig {
    /// Stable Diffusion's kl-f8 (LDM `ch 128, ch_mult [1,2,4,4], num_res_blocks 2, z_channels 4`),
    /// the architecture LRF fine-tunes; kl-f8-d16 is the same with 16 latent channels.
    pub fn sd_kl_f8(latent_channels: i64) -> Self {
        KlConfig {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels,
            down_block_types: vec![DOWN_BLOCK.into(); 4],
            up_block_types: vec![UP_BLOCK.into(); 4],
            ..Default::default()
        }
    }

    /// Reads a diffusers `config.json`, refusing block types and activations this model lacks.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        Self::read_json_file(path).map(|(config, _)| config)
    }

    /// [`KlConfig::from_json_file`], also returning the file's other fields (`shift_factor`,
    /// `force_upcast`, `latents_mean`, …, but not diffusers' `_class_name`-style bookkeeping), which
    /// this model does not use but a saved copy must keep for the tools that do.
    fn read_json_file(path: &Path) -> Result<(Self, serde_json::Map<String, serde_json::Value>)> {
        let text = std::fs::read_to_string(path).map_err(|source| VaeError::Io {
            path: path.into(),
            source,
        })?;
        let invalid =
            |e: serde_json::Error| VaeError::checkpoint(path.display().to_string(), format!("invalid config: {e}"));
        let mut fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).map_err(invalid)?;
        let config: KlConfig = serde_json::from_value(fields.clone().into()).map_err(invalid)?;
        config
            .validate()
            .map_err(|m| VaeError::checkpoint(path.display().to_string(), m))?;
        let known = config.to_json();
        fields.retain(|k, _| !k.starts_with('_') && !known.contains_key(k));
        Ok((config, fields))
    }

    fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self).expect("KlConfig serialises") {
            serde_json::Value::Object(fields) => fields,
            other => unreachable!("KlConfig serialises to an object, not {other}"),
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "block_out_channels ({n}), down_block_types ({}) and up_block_types ({}) must have one entry per level",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| ![DOWN_BLOCK, ATTN_DOWN_BLOCK].contains(&t.as_str()))
        {
            return Err(format!(
                "down block type {t} is not supported (only {DOWN_BLOCK} and {ATTN_DOWN_BLOCK})"
            ));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| ![UP_BLOCK, ATTN_UP_BLOCK].contains(&t.as_str()))
        {
            return Err(format!(
                "up block type {t} is not supported (only {UP_BLOCK} and {ATTN_UP_BLOCK})"
            ));
        }
        if self.act_fn != "silu" {
            return Err(format!("act_fn {} is not supported (only silu)", self.act_fn));
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| c % self.norm_num_groups != 0) {
            return Err(format!(
                "block width {c} is not divisible by norm_num_groups {}",
                self.norm_num_groups
            ));
        }
        Ok(())
    }

    /// Reads the architecture off an LDM checkpoint's shapes (LDM files carry no config; their YAML's
    /// ddconfig is implied by the weights). LDM's GroupNorms always have 32 groups; a level listed in
    /// `attn_resolutions` holds `encoder.down.N.attn.*` and `decoder.up.N.attn.*` (attention levels).
    fn infer_ldm(ckpt: &Checkpoint) -> Result<Self> {
        let mut block_out_channels = Vec::new();
        while let Some(shape) = ckpt.shape(&format!(
            "encoder.down.{}.block.0.conv1.weight",
            block_out_channels.len()
        )) {
            block_out_channels.push(shape[0]);
        }
        let layers_per_block = (0..)
            .take_while(|j| ckpt.get(&format!("encoder.down.0.block.{j}.conv1.weight")).is_some())
            .count() as i64;
        let levels = block_out_channels.len();
        // An attention level's type; diffusers numbers decoder levels from the latent, LDM from the
        // image (see `diffusers_to_ldm`).
        let level_type = |ldm_level: String, attention: &str, plain: &str| {
            let has_attention = ckpt.get(&format!("{ldm_level}.attn.0.q.weight")).is_some();
            (if has_attention { attention } else { plain }).to_string()
        };
        let down_block_types = (0..levels)
            .map(|i| level_type(format!("encoder.down.{i}"), ATTN_DOWN_BLOCK, DOWN_BLOCK))
            .collect();
        let up_block_types = (0..levels)
            .map(|i| level_type(format!("decoder.up.{}", levels - 1 - i), ATTN_UP_BLOCK, UP_BLOCK))
            .collect();
        let config = KlConfig {
            in_channels: ckpt.require_shape("encoder.conv_in.weight")?[1],
            out_channels: ckpt.require_shape("decoder.conv_out.weight")?[0],
            block_out_channels,
            layers_per_block,
            latent_channels: ckpt.require_shape("decoder.conv_in.weight")?[1],
            norm_num_groups: 32,
            use_quant_conv: ckpt.get("quant_conv.weight").is_some(),
            use_post_quant_conv: ckpt.get("post_quant_conv.weight").is_some(),
            mid_block_add_attention: ckpt.get("encoder.mid.attn_1.q.weight").is_some(),
            down_block_types,
            up_block_types,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|m| VaeError::checkpoint(ckpt.source(), format!("inferred architecture: {m}")))?;
        Ok(config)
    }
}

/// How a checkpoint names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    Diffusers,
    /// The original latent-diffusion / CompVis layout (`.ckpt` state dicts converted to safetensors).
    Ldm,
}

impl KeyLayout {
    /// Recognises the layout from the encoder's first down block; anything else is not a KL autoencoder.
    pub fn detect(ckpt: &Checkpoint) -> Result<Self> {
        if ckpt.keys().any(|k| k.starts_with("encoder.down_blocks.")) {
            Ok(KeyLayout::Diffusers)
        } else if ckpt.keys().any(|k| k.starts_with("encoder.down.")) {
            Ok(KeyLayout::Ldm)
        } else {
            Err(VaeError::checkpoint(
                ckpt.source(),
                "neither a diffusers (encoder.down_blocks.*) nor an LDM (encoder.down.*) AutoencoderKL checkpoint",
            ))
        }
    }

    /// The keys that may hold the model's parameter `name` (named as in diffusers) in this layout.
    fn file_keys(self, name: &str, levels: usize) -> Vec<String> {
        match self {
            KeyLayout::Ldm => vec![diffusers_to_ldm(name, levels)],
            // Older diffusers files keep the pre-0.14 attention names.
            KeyLayout::Diffusers => {
                let legacy = [
                    ("to_q.", "query."),
                    ("to_k.", "key."),
                    ("to_v.", "value."),
                    ("to_out.0.", "proj_attn."),
                ]
                .iter()
                .find(|(new, _)| name.contains(new))
                .map(|(new, old)| name.replace(new, old));
                std::iter::once(name.to_string()).chain(legacy).collect()
            }
        }
    }
}

/// Renames a diffusers parameter to the LDM key holding it. LDM numbers decoder levels from the
/// lowest resolution up, diffusers from the latent down, hence the reversal over `levels`.
fn diffusers_to_ldm(name: &str, levels: usize) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let up = |b: &str| {
        b.parse::<usize>()
            .map_or(b.to_string(), |b| (levels - 1 - b).to_string())
    };
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let (mapped, used): (Vec<String>, usize) = match &parts[i..] {
            ["down_blocks", b, "resnets", r, ..] => {
                (vec!["down".into(), b.to_string(), "block".into(), r.to_string()], 4)
            }
            ["down_blocks", b, "attentions", a, ..] => {
                (vec!["down".into(), b.to_string(), "attn".into(), a.to_string()], 4)
            }
            ["down_blocks", b, "downsamplers", "0", ..] => (vec!["down".into(), b.to_string(), "downsample".into()], 4),
            ["up_blocks", b, "resnets", r, ..] => (vec!["up".into(), up(b), "block".into(), r.to_string()], 4),
            ["up_blocks", b, "attentions", a, ..] => (vec!["up".into(), up(b), "attn".into(), a.to_string()], 4),
            ["up_blocks", b, "upsamplers", "0", ..] => (vec!["up".into(), up(b), "upsample".into()], 4),
            ["mid_block", "resnets", r, ..] => {
                let n = r.parse::<usize>().map_or(0, |r| r + 1);
                (vec!["mid".into(), format!("block_{n}")], 3)
            }
            ["mid_block", "attentions", "0", ..] => (vec!["mid".into(), "attn_1".into()], 3),
            ["group_norm", ..] => (vec!["norm".into()], 1),
            ["to_q", ..] => (vec!["q".into()], 1),
            ["to_k", ..] => (vec!["k".into()], 1),
            ["to_v", ..] => (vec!["v".into()], 1),
            ["to_out", "0", ..] => (vec!["proj_out".into()], 2),
            ["conv_norm_out", ..] => (vec!["norm_out".into()], 1),
            ["conv_shortcut", ..] => (vec!["nin_shortcut".into()], 1),
            [other, ..] => (vec![other.to_string()], 1),
            [] => unreachable!("i < parts.len()"),
        };
        out.extend(mapped);
        i += used;
    }
    out.join(".")
}

/// diffusers' `ResnetBlock2D` without time embedding: two GroupNorm–SiLU–conv stages and a 1×1
/// shortcut when the width changes.
#[derive(Debug)]
struct Resnet {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    shortcut: Option<nn::Conv2D>,
}

impl Resnet {
    fn new(p: nn::Path, cin: i64, cout: i64, groups: i64) -> Self {
        Resnet {
            norm1: group_norm(&p / "norm1", groups, cin, NORM_EPS),
            conv1: conv(&p / "conv1", cin, cout, 3, 1, 1, true),
            norm2: group_norm(&p / "norm2", groups, cout, NORM_EPS),
            conv2: conv(&p / "conv2", cout, cout, 3, 1, 1, true),
            shortcut: (cin != cout).then(|| conv(&p / "conv_shortcut", cin, cout, 1, 1, 0, true)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = x
            .apply(&self.norm1)
            .silu()
            .apply(&self.conv1)
            .apply(&self.norm2)
            .silu()
            .apply(&self.conv2);
        match &self.shortcut {
            Some(s) => x.apply(s) + h,
            None => x + h,
        }
    }
}

/// Single-head self-attention over all pixels, with a GroupNorm in front and a residual.
#[derive(Debug)]
struct Attention {
    norm: nn::GroupNorm,
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    out: nn::Linear,
}

impl Attention {
    fn new(p: nn::Path, channels: i64, groups: i64) -> Self {
        let linear = |name: &str| nn::linear(&p / name, channels, channels, Default::default());
        Attention {
            norm: group_norm(&p / "group_norm", groups, channels, NORM_EPS),
            q: linear("to_q"),
            k: linear("to_k"),
            v: linear("to_v"),
            out: nn::linear(&p / "to_out" / "0", channels, channels, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("NCHW checked at the model's entry");
        let tokens = x.apply(&self.norm).view([b, c, h * w]).transpose(1, 2);
        let heads = |l: &nn::Linear| tokens.apply(l).unsqueeze(1);
        let attended = Tensor::scaled_dot_product_attention::<Tensor>(
            &heads(&self.q),
            &heads(&self.k),
            &heads(&self.v),
            None,
            0.0,
            false,
            None,
            false,
        );
        let out = attended
            .squeeze_dim(1)
            .apply(&self.out)
            .transpose(1, 2)
            .reshape([b, c, h, w]);
        out + x
    }
}

#[derive(Debug)]
struct MidBlock {
    first: Resnet,
    attention: Option<Attention>,
    second: Resnet,
}

impl MidBlock {
    fn new(p: nn::Path, channels: i64, config: &KlConfig) -> Self {
        let g = config.norm_num_groups;
        MidBlock {
            first: Resnet::new(&p / "resnets" / 0, channels, channels, g),
            attention: config
                .mid_block_add_attention
                .then(|| Attention::new(&p / "attentions" / 0, channels, g)),
            second: Resnet::new(&p / "resnets" / 1, channels, channels, g),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.first.forward(x);
        let x = match &self.attention {
            Some(a) => a.forward(&x),
            None => x,
        };
        self.second.forward(&x)
    }
}

/// One resolution level: its resnets, each followed by a self-attention in attention levels
/// (`Attn…Block2D`), then a resampling convolution except at the last level.
#[derive(Debug)]
struct Level {
    resnets: Vec<Resnet>,
    attentions: Vec<Attention>,
    resample: Option<nn::Conv2D>,
}

impl Level {
    /// `num_resnets` resnets from `cin` to `cout` channels under `p` (a `down_blocks.N` or `up_blocks.N`),
    /// with one attention per resnet when `attention`; the resampling convolution is added by the caller.
    fn new(p: &nn::Path, cin: i64, cout: i64, num_resnets: usize, attention: bool, groups: i64) -> Self {
        let resnets = (0..num_resnets)
            .map(|j| Resnet::new(p / "resnets" / j, if j == 0 { cin } else { cout }, cout, groups))
            .collect();
        let attentions = (0..if attention { num_resnets } else { 0 })
            .map(|j| Attention::new(p / "attentions" / j, cout, groups))
            .collect();
        Level {
            resnets,
            attentions,
            resample: None,
        }
    }

    /// The resnets (and attentions); resampling is left to the caller, which differs by direction.
    fn forward_blocks(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for (j, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h);
            if let Some(a) = self.attentions.get(j) {
                h = a.forward(&h);
            }
        }
        h
    }
}

#[derive(Debug)]
struct Encoder {
    conv_in: nn::Conv2D,
    levels: Vec<Level>,
    mid: MidBlock,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
    quant_conv: Option<nn::Conv2D>,
}

impl Encoder {
    fn new(root: nn::Path, c: &KlConfig) -> Self {
        let p = &root / "encoder";
        let ch = &c.block_out_channels;
        let g = c.norm_num_groups;
        let levels = (0..ch.len())
            .map(|i| {
                let lp = &p / "down_blocks" / i;
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                let attention = c.down_block_types[i] == ATTN_DOWN_BLOCK;
                let mut level = Level::new(&lp, cin, ch[i], c.layers_per_block as usize, attention, g);
                level.resample =
                    (i + 1 < ch.len()).then(|| conv(&lp / "downsamplers" / 0 / "conv", ch[i], ch[i], 3, 2, 0, true));
                level
            })
            .collect();
        let top = *ch.last().expect("validated non-empty");
        let moments = 2 * c.latent_channels;
        Encoder {
            conv_in: conv(&p / "conv_in", c.in_channels, ch[0], 3, 1, 1, true),
            levels,
            mid: MidBlock::new(&p / "mid_block", top, c),
            norm_out: group_norm(&p / "conv_norm_out", g, top, NORM_EPS),
            conv_out: conv(&p / "conv_out", top, moments, 3, 1, 1, true),
            quant_conv: c
                .use_quant_conv
                .then(|| conv(&root / "quant_conv", moments, moments, 1, 1, 0, true)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.apply(&self.conv_in);
        for level in &self.levels {
            h = level.forward_blocks(&h);
            if let Some(down) = &level.resample {
                // Asymmetric padding (right and bottom only), as LDM and diffusers do.
                h = h.constant_pad_nd([0, 1, 0, 1]).apply(down);
            }
        }
        let h = self.mid.forward(&h).apply(&self.norm_out).silu().apply(&self.conv_out);
        match &self.quant_conv {
            Some(q) => h.apply(q),
            None => h,
        }
    }
}

#[derive(Debug)]
struct Decoder {
    post_quant_conv: Option<nn::Conv2D>,
    conv_in: nn::Conv2D,
    mid: MidBlock,
    levels: Vec<Level>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl Decoder {
    fn new(root: nn::Path, c: &KlConfig) -> Self {
        let p = &root / "decoder";
        let ch: Vec<i64> = c.block_out_channels.iter().rev().copied().collect();
        let g = c.norm_num_groups;
        let levels = (0..ch.len())
            .map(|i| {
                let lp = &p / "up_blocks" / i;
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                let attention = c.up_block_types[i] == ATTN_UP_BLOCK;
                let mut level = Level::new(&lp, cin, ch[i], c.layers_per_block as usize + 1, attention, g);
                level.resample =
                    (i + 1 < ch.len()).then(|| conv(&lp / "upsamplers" / 0 / "conv", ch[i], ch[i], 3, 1, 1, true));
                level
            })
            .collect();
        let bottom = *ch.last().expect("validated non-empty");
        let l = c.latent_channels;
        Decoder {
            post_quant_conv: c
                .use_post_quant_conv
                .then(|| conv(&root / "post_quant_conv", l, l, 1, 1, 0, true)),
            conv_in: conv(&p / "conv_in", l, ch[0], 3, 1, 1, true),
            mid: MidBlock::new(&p / "mid_block", ch[0], c),
            levels,
            norm_out: group_norm(&p / "conv_norm_out", g, bottom, NORM_EPS),
            conv_out: conv(&p / "conv_out", bottom, c.out_channels, 3, 1, 1, true),
        }
    }

    fn forward(&self, z: &Tensor) -> Tensor {
        let z = match &self.post_quant_conv {
            Some(p) => z.apply(p),
            None => z.shallow_clone(),
        };
        let mut h = self.mid.forward(&z.apply(&self.conv_in));
        for level in &self.levels {
            h = level.forward_blocks(&h);
            if let Some(up) = &level.resample {
                let (hh, ww) = (h.size()[2], h.size()[3]);
                h = h.upsample_nearest2d([hh * 2, ww * 2], 2.0, 2.0).apply(up);
            }
        }
        h.apply(&self.norm_out).silu().apply(&self.conv_out)
    }
}

/// A KL autoencoder; its encoder returns a diagonal Gaussian posterior, images are in [-1, 1].
pub struct AutoencoderKL {
    config: KlConfig,
    /// The fields of the opened `config.json` that [`KlConfig`] lacks, written back by [`AutoencoderKL::save`].
    extra_config: serde_json::Map<String, serde_json::Value>,
    encoder_vars: nn::VarStore,
    encoder: Encoder,
    decoder_vars: nn::VarStore,
    decoder: Decoder,
}

impl AutoencoderKL {
    /// A model with freshly initialised (random) weights, for tests and benchmarks.
    pub fn new(config: KlConfig, device: Device) -> Result<Self> {
        config.validate().map_err(|m| VaeError::input("KlConfig", m))?;
        let encoder_vars = nn::VarStore::new(device);
        let decoder_vars = nn::VarStore::new(device);
        let encoder = Encoder::new(encoder_vars.root(), &config);
        let decoder = Decoder::new(decoder_vars.root(), &config);
        Ok(AutoencoderKL {
            config,
            extra_config: serde_json::Map::new(),
            encoder_vars,
            encoder,
            decoder_vars,
            decoder,
        })
    }

    /// Opens a diffusers model folder (`config.json` and `diffusion_pytorch_model.safetensors`) or a
    /// single safetensors file in either layout (a diffusers file then needs `config.json` beside it).
    pub fn open(path: &Path, device: Device) -> Result<Self> {
        let (weights, config_path) = if path.is_dir() {
            (
                path.join("diffusion_pytorch_model.safetensors"),
                path.join("config.json"),
            )
        } else {
            (path.to_path_buf(), path.with_file_name("config.json"))
        };
        let ckpt = Checkpoint::open(&weights)?;
        let layout = KeyLayout::detect(&ckpt)?;
        let (config, extra_config) = match layout {
            KeyLayout::Diffusers => KlConfig::read_json_file(&config_path)?,
            KeyLayout::Ldm => (KlConfig::infer_ldm(&ckpt)?, serde_json::Map::new()),
        };
        let mut model = Self::from_checkpoint(config, &ckpt, layout, device)?;
        model.extra_config = extra_config;
        Ok(model)
    }

    /// Builds `config` and fills it from `ckpt`; every key must be used and every parameter found.
    /// LDM training checkpoints also hold the loss (LPIPS and discriminator) under `loss.`: ignored.
    pub fn from_checkpoint(config: KlConfig, ckpt: &Checkpoint, layout: KeyLayout, device: Device) -> Result<Self> {
        let model = Self::new(config, device)?;
        let levels = model.config.block_out_channels.len();
        let ignored = |k: &str| layout == KeyLayout::Ldm && k.starts_with("loss.");
        ckpt.load_into(
            &[&model.encoder_vars, &model.decoder_vars],
            |name| layout.file_keys(name, levels),
            ignored,
        )?;
        Ok(model)
    }

    pub fn config(&self) -> &KlConfig {
        &self.config
    }

    /// Saves the model as a diffusers-layout folder (`config.json`, `diffusion_pytorch_model.safetensors`,
    /// f32), which [`AutoencoderKL::open`] and diffusers' `AutoencoderKL.from_pretrained` read back.
    /// The config keeps the opened `config.json`'s fields that this model does not use.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| VaeError::Io {
            path: dir.into(),
            source,
        })?;
        let mut config = serde_json::Map::new();
        config.insert("_class_name".into(), "AutoencoderKL".into());
        config.extend(self.extra_config.clone());
        config.extend(self.config.to_json());
        let config_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&config).expect("JSON value serialises");
        std::fs::write(&config_path, text).map_err(|source| VaeError::Io {
            path: config_path,
            source,
        })?;
        write_vars(
            &[&self.encoder_vars, &self.decoder_vars],
            &dir.join("diffusion_pytorch_model.safetensors"),
        )
    }
}

impl Autoencoder for AutoencoderKL {
    fn latent_channels(&self) -> i64 {
        self.config.latent_channels
    }

    fn downsampling(&self) -> i64 {
        1 << (self.config.block_out_channels.len() - 1)
    }

    fn input_range(&self) -> InputRange {
        InputRange::Symmetric
    }

    fn encode(&self, images: &Tensor) -> Result<Posterior> {
        check_nchw(
            "AutoencoderKL::encode images",
            images,
            self.config.in_channels,
            self.downsampling(),
        )?;
        let moments = self.encoder.forward(images);
        let halves = moments.chunk(2, 1);
        Ok(Posterior {
            mean: halves[0].shallow_clone(),
            logvar: Some(halves[1].clamp(-30.0, 20.0)),
        })
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        check_nchw("AutoencoderKL::decode latents", latents, self.config.latent_channels, 1)?;
        Ok(self.decoder.forward(latents))
    }

    fn vars(&self, part: Part) -> &nn::VarStore {
        match part {
            Part::Encoder => &self.encoder_vars,
            Part::Decoder => &self.decoder_vars,
        }
    }

    fn vars_mut(&mut self, part: Part) -> &mut nn::VarStore {
        match part {
            Part::Encoder => &mut self.encoder_vars,
            Part::Decoder => &mut self.decoder_vars,
        }
    }

    fn decoder_output_weight(&self) -> Tensor {
        self.decoder.conv_out.ws.shallow_clone()
    }

    fn decoder_scale(&self, name: &str) -> Option<i64> {
        let levels = self.config.block_out_channels.len() as u32;
        if name.starts_with("post_quant_conv.") {
            return Some(1);
        }
        let rest = name.strip_prefix("decoder.")?;
        if rest.starts_with("conv_in.") || rest.starts_with("mid_block.") {
            return Some(1);
        }
        if rest.starts_with("conv_norm_out.") || rest.starts_with("conv_out.") {
            return Some(1 << (levels - 1));
        }
        let (level, rest) = rest.strip_prefix("up_blocks.")?.split_once('.')?;
        let level: u32 = level.parse().ok().filter(|&l| l < levels)?;
        // A level's blocks act at its input's resolution; its upsampler's convolution after the upsampling.
        let upsamplings = if rest.starts_with("upsamplers.") {
            level + 1
        } else {
            level
        };
        Some(1 << upsamplings)
    }

    fn save_folder(&self, dir: &Path) -> Result<()> {
        self.save(dir)
    }
}
