//! The TAESD family of tiny autoencoders (madebyollin/taesd): TAESD and TAESDXL (4 latent channels),
//! TAESD3 and TAEF1 (16), TAEF2 (32, with pooled blocks). They share one layer sequence; the latent
//! width and which blocks carry a pool branch are read from the weights.

use std::path::Path;

use tch::{Device, Tensor, nn};

use crate::checkpoint::{Checkpoint, write_vars};
use crate::error::{Result, VaeError};
use crate::layers::{conv, group_norm};
use crate::{Autoencoder, InputRange, Part, Posterior, check_nchw};

const WIDTH: i64 = 64;
const TAEF2_ENCODER: &[u8] = include_bytes!("../../assets/taef2/taef2_encoder.safetensors");
const TAEF2_DECODER: &[u8] = include_bytes!("../../assets/taef2/taef2_decoder.safetensors");

/// One entry of the TAESD layer sequence; the index in the sequence is the key prefix.
#[derive(Clone, Copy)]
enum Spec {
    /// 3×3 convolution, stride and bias as given; channels in/out resolved from the latent width.
    Conv {
        cin: Width,
        cout: Width,
        stride: i64,
        bias: bool,
    },
    Block,
    Relu,
    /// x ← 3·tanh(x/3), keeping the decoder's input in a range it was trained on.
    SoftClamp,
    Upsample,
}

#[derive(Clone, Copy)]
enum Width {
    Rgb,
    Hidden,
    Latent,
}

const fn conv3(cin: Width, cout: Width) -> Spec {
    Spec::Conv {
        cin,
        cout,
        stride: 1,
        bias: true,
    }
}
const DOWN: Spec = Spec::Conv {
    cin: Width::Hidden,
    cout: Width::Hidden,
    stride: 2,
    bias: false,
};
const UP_CONV: Spec = Spec::Conv {
    cin: Width::Hidden,
    cout: Width::Hidden,
    stride: 1,
    bias: false,
};

#[rustfmt::skip]
const ENCODER: [Spec; 15] = [
    conv3(Width::Rgb, Width::Hidden), Spec::Block,
    DOWN, Spec::Block, Spec::Block, Spec::Block,
    DOWN, Spec::Block, Spec::Block, Spec::Block,
    DOWN, Spec::Block, Spec::Block, Spec::Block,
    conv3(Width::Hidden, Width::Latent),
];

#[rustfmt::skip]
const DECODER: [Spec; 20] = [
    Spec::SoftClamp, conv3(Width::Latent, Width::Hidden), Spec::Relu,
    Spec::Block, Spec::Block, Spec::Block, Spec::Upsample, UP_CONV,
    Spec::Block, Spec::Block, Spec::Block, Spec::Upsample, UP_CONV,
    Spec::Block, Spec::Block, Spec::Block, Spec::Upsample, UP_CONV,
    Spec::Block, conv3(Width::Hidden, Width::Rgb),
];

/// TAESD's residual block: three 3×3 convolutions with ReLUs and an identity skip; TAEF2 adds a
/// pooled branch (1×1 conv up, GroupNorm, ReLU, 1×1 conv down) added to the input first.
#[derive(Debug)]
struct Block {
    pool: Option<(nn::Conv2D, nn::GroupNorm, nn::Conv2D)>,
    convs: [nn::Conv2D; 3],
}

impl Block {
    fn new(p: nn::Path, pool_width: Option<i64>) -> Block {
        let pool = pool_width.map(|pw| {
            let q = &p / "pool";
            (
                conv(&q / "0", WIDTH, pw, 1, 1, 0, false),
                group_norm(&q / "1", 4, pw, 1e-5),
                conv(&q / "3", pw, WIDTH, 1, 1, 0, false),
            )
        });
        let c = &p / "conv";
        let convs = [0, 2, 4].map(|i| conv(&c / i, WIDTH, WIDTH, 3, 1, 1, true));
        Block { pool, convs }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = match &self.pool {
            Some((up, norm, down)) => x + x.apply(up).apply(norm).relu().apply(down),
            None => x.shallow_clone(),
        };
        let h = x
            .apply(&self.convs[0])
            .relu()
            .apply(&self.convs[1])
            .relu()
            .apply(&self.convs[2]);
        (h + x).relu()
    }
}

#[derive(Debug)]
enum Layer {
    Conv(nn::Conv2D),
    Block(Box<Block>),
    Relu,
    SoftClamp,
    Upsample,
}

impl Layer {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Layer::Conv(c) => x.apply(c),
            Layer::Block(b) => b.forward(x),
            Layer::Relu => x.relu(),
            Layer::SoftClamp => (x / 3.0).tanh() * 3.0,
            Layer::Upsample => {
                let (h, w) = (x.size()[2], x.size()[3]);
                x.upsample_nearest2d([h * 2, w * 2], 2.0, 2.0)
            }
        }
    }
}

/// One half of a tiny autoencoder: its parameters and its layer sequence.
struct Half {
    vars: nn::VarStore,
    layers: Vec<Layer>,
}

impl Half {
    /// Builds the sequence `specs` with the weights of `ckpt`, which must match it exactly.
    fn load(specs: &[Spec], latent: i64, ckpt: &Checkpoint, device: Device) -> Result<Half> {
        let vars = nn::VarStore::new(device);
        let root = vars.root();
        let width = |w: Width| match w {
            Width::Rgb => 3,
            Width::Hidden => WIDTH,
            Width::Latent => latent,
        };
        let layers = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| match *spec {
                Spec::Conv {
                    cin,
                    cout,
                    stride,
                    bias,
                } => Layer::Conv(conv(&root / i, width(cin), width(cout), 3, stride, 1, bias)),
                Spec::Block => {
                    let pool_width = ckpt.shape(&format!("{i}.pool.0.weight")).map(|s| s[0]);
                    Layer::Block(Box::new(Block::new(&root / i, pool_width)))
                }
                Spec::Relu => Layer::Relu,
                Spec::SoftClamp => Layer::SoftClamp,
                Spec::Upsample => Layer::Upsample,
            })
            .collect();
        ckpt.load_into(&[&vars], |name| vec![name.to_string()], |_| false)?;
        Ok(Half { vars, layers })
    }

    /// Runs the layers on channels-last (NHWC) activations: oneDNN convolves NHWC directly, while NCHW
    /// inputs are reordered to its blocked layout and back around every convolution. The result is
    /// returned in the ordinary contiguous layout.
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = channels_last(x);
        self.layers.iter().fold(x, |x, layer| layer.forward(&x)).contiguous()
    }
}

/// The same `[N, C, H, W]` tensor stored channels-last; operators keep that layout (PyTorch's
/// `memory_format=torch.channels_last`, which tch does not expose).
fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// A TAESD-family autoencoder: deterministic, images in [0, 1], f = 8.
pub struct TinyAutoencoder {
    latent_channels: i64,
    encoder: Half,
    decoder: Half,
}

impl TinyAutoencoder {
    /// The bundled TAEF2 (32 latent channels, MIT licence, see `assets/taef2/`), compiled into the
    /// program so the default pipeline needs no download.
    /// The bundled TAEF2's weights as compiled into the binary (encoder, then decoder), for hashing into
    /// artifact keys: different weights must never reuse what other weights made.
    pub fn taef2_weights() -> [&'static [u8]; 2] {
        [TAEF2_ENCODER, TAEF2_DECODER]
    }

    pub fn taef2(device: Device) -> Result<Self> {
        Self::from_checkpoints(
            &Checkpoint::from_bytes("embedded assets/taef2/taef2_encoder.safetensors", TAEF2_ENCODER)?,
            &Checkpoint::from_bytes("embedded assets/taef2/taef2_decoder.safetensors", TAEF2_DECODER)?,
            device,
        )
    }

    /// Loads a model from its two files (`<name>_encoder.safetensors`, `<name>_decoder.safetensors`),
    /// with the keys of madebyollin/taesd's state dicts.
    pub fn open(encoder: &Path, decoder: &Path, device: Device) -> Result<Self> {
        Self::from_checkpoints(&Checkpoint::open(encoder)?, &Checkpoint::open(decoder)?, device)
    }

    pub fn from_checkpoints(encoder: &Checkpoint, decoder: &Checkpoint, device: Device) -> Result<Self> {
        let last = ENCODER.len() - 1;
        let latent = encoder.require_shape(&format!("{last}.weight"))?[0];
        let decoder_latent = decoder.require_shape("1.weight")?;
        if decoder_latent.get(1) != Some(&latent) {
            return Err(VaeError::checkpoint(
                decoder.source(),
                format!("1.weight {decoder_latent:?} does not take the encoder's {latent} latent channels"),
            ));
        }
        Ok(TinyAutoencoder {
            latent_channels: latent,
            encoder: Half::load(&ENCODER, latent, encoder, device)?,
            decoder: Half::load(&DECODER, latent, decoder, device)?,
        })
    }

    /// Saves the two halves in the layout [`TinyAutoencoder::open`] reads (f32).
    pub fn save(&self, encoder: &Path, decoder: &Path) -> Result<()> {
        write_vars(&[&self.encoder.vars], encoder)?;
        write_vars(&[&self.decoder.vars], decoder)
    }
}

impl Autoencoder for TinyAutoencoder {
    fn latent_channels(&self) -> i64 {
        self.latent_channels
    }

    fn downsampling(&self) -> i64 {
        8
    }

    fn input_range(&self) -> InputRange {
        InputRange::Unit
    }

    fn encode(&self, images: &Tensor) -> Result<Posterior> {
        check_nchw("TinyAutoencoder::encode images", images, 3, 8)?;
        Ok(Posterior {
            mean: self.encoder.forward(images),
            logvar: None,
        })
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        check_nchw("TinyAutoencoder::decode latents", latents, self.latent_channels, 1)?;
        Ok(self.decoder.forward(latents))
    }

    fn vars(&self, part: Part) -> &nn::VarStore {
        match part {
            Part::Encoder => &self.encoder.vars,
            Part::Decoder => &self.decoder.vars,
        }
    }

    fn vars_mut(&mut self, part: Part) -> &mut nn::VarStore {
        match part {
            Part::Encoder => &mut self.encoder.vars,
            Part::Decoder => &mut self.decoder.vars,
        }
    }

    fn decoder_output_weight(&self) -> Tensor {
        match self.decoder.layers.last() {
            Some(Layer::Conv(c)) => c.ws.shallow_clone(),
            _ => unreachable!("the TAESD decoder sequence ends with a convolution"),
        }
    }

    fn decoder_scale(&self, name: &str) -> Option<i64> {
        let (index, _) = name.split_once('.')?;
        let index: usize = index.parse().ok()?;
        let upsamplings = DECODER
            .get(..=index)?
            .iter()
            .filter(|spec| matches!(spec, Spec::Upsample))
            .count();
        Some(1 << upsamplings)
    }

    fn save_folder(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| VaeError::Io {
            path: dir.into(),
            source,
        })?;
        self.save(
            &dir.join("taesd_encoder.safetensors"),
            &dir.join("taesd_decoder.safetensors"),
        )
    }
}
