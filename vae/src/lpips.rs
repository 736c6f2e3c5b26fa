//! LPIPS (Zhang et al. 2018, v0.1) and ST-LPIPS (Ghildyal & Liu 2022): distances between deep features
//! of a VGG16 or AlexNet backbone, weighted by learned 1×1 heads.
//!
//! ST-LPIPS is LPIPS on anti-aliased backbones (every stride is a stride-1 max-pool or convolution
//! followed by a binomial blur-pool), trained to tolerate the sub-pixel shifts a reconstruction makes:
//! its complete networks ship in the `stlpips_pytorch` wheel (BSD-2), which `scripts/setup.sh` converts
//! into [`perceptual_weights_dir`]. For LPIPS only the heads ship (in the `lpips` wheel, converted
//! beside them); the ImageNet backbone is the user's: torchvision's `vgg16`/`alexnet` state dict
//! (`features.*` keys) as safetensors, or a complete `lpips` state dict.

use std::path::{Path, PathBuf};

use tch::{Device, Tensor, nn};

use crate::checkpoint::Checkpoint;
use crate::error::{Result, VaeError};
use crate::layers::conv;

/// The backbone; the LRF paper reports VGG, IG-AE and latent-nerfstudio AlexNet. The shift-tolerant
/// ones are ST-LPIPS's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpipsNet {
    Vgg16,
    Alex,
    Vgg16ShiftTolerant,
    AlexShiftTolerant,
}

/// Environment variable naming the folder with the converted perceptual weights.
pub const PERCEPTUAL_WEIGHTS_ENV: &str = "LRF_PERCEPTUAL_WEIGHTS";

/// Where `scripts/setup.sh` writes the perceptual weights it converts from the wheels
/// (`st-lpips-{vgg,alex}.safetensors`, `lpips-heads-{vgg,alex}.safetensors`): `$LRF_PERCEPTUAL_WEIGHTS`,
/// else the project's virtualenv, which also holds the libtorch this binary links.
pub fn perceptual_weights_dir() -> PathBuf {
    match std::env::var_os(PERCEPTUAL_WEIGHTS_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/share/lrf-flow/perceptual"),
    }
}

impl LpipsNet {
    /// The file in [`perceptual_weights_dir`] with this net's ST-LPIPS network or LPIPS heads.
    pub fn shipped_weights(self) -> PathBuf {
        let name = match self {
            LpipsNet::Vgg16 => "lpips-heads-vgg",
            LpipsNet::Alex => "lpips-heads-alex",
            LpipsNet::Vgg16ShiftTolerant => "st-lpips-vgg",
            LpipsNet::AlexShiftTolerant => "st-lpips-alex",
        };
        perceptual_weights_dir().join(format!("{name}.safetensors"))
    }
}

/// One layer of torchvision's `features` sequence.
#[derive(Clone, Copy)]
enum Op {
    Conv {
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        pad: i64,
    },
    Relu,
    MaxPool {
        k: i64,
        stride: i64,
    },
    /// Reflection padding by 2, then a depthwise [1 2 1]ᵀ[1 2 1]/16 filter with stride 2 (the
    /// anti-aliased downsampling of Zhang 2019, as ST-LPIPS pads it).
    BlurPool,
}

const fn c3(cin: i64, cout: i64) -> Op {
    Op::Conv {
        cin,
        cout,
        k: 3,
        stride: 1,
        pad: 1,
    }
}
const R: Op = Op::Relu;

impl LpipsNet {
    /// torchvision's `features` layers and where LPIPS taps them (end index of each of 5 slices).
    fn layers(self) -> (Vec<Op>, [usize; 5]) {
        match self {
            LpipsNet::Vgg16 => {
                let p = Op::MaxPool { k: 2, stride: 2 };
                #[rustfmt::skip]
                let ops = vec![
                    c3(3, 64), R, c3(64, 64), R, p, c3(64, 128), R, c3(128, 128), R, p,
                    c3(128, 256), R, c3(256, 256), R, c3(256, 256), R, p,
                    c3(256, 512), R, c3(512, 512), R, c3(512, 512), R, p,
                    c3(512, 512), R, c3(512, 512), R, c3(512, 512), R,
                ];
                (ops, [4, 9, 16, 23, 30])
            }
            LpipsNet::Alex => {
                let p = Op::MaxPool { k: 3, stride: 2 };
                #[rustfmt::skip]
                let ops = vec![
                    Op::Conv { cin: 3, cout: 64, k: 11, stride: 4, pad: 2 }, R, p,
                    Op::Conv { cin: 64, cout: 192, k: 5, stride: 1, pad: 2 }, R, p,
                    c3(192, 384), R, c3(384, 256), R, c3(256, 256), R,
                ];
                (ops, [2, 5, 8, 10, 12])
            }
            LpipsNet::Vgg16ShiftTolerant => {
                let p = Op::MaxPool { k: 2, stride: 1 };
                let b = Op::BlurPool;
                #[rustfmt::skip]
                let ops = vec![
                    c3(3, 64), R, c3(64, 64), R, p, b, c3(64, 128), R, c3(128, 128), R, p, b,
                    c3(128, 256), R, c3(256, 256), R, c3(256, 256), R, p, b,
                    c3(256, 512), R, c3(512, 512), R, c3(512, 512), R, p, b,
                    c3(512, 512), R, c3(512, 512), R, c3(512, 512), R,
                ];
                (ops, [4, 10, 18, 26, 34])
            }
            LpipsNet::AlexShiftTolerant => {
                let p = Op::MaxPool { k: 3, stride: 1 };
                let b = Op::BlurPool;
                #[rustfmt::skip]
                let ops = vec![
                    Op::Conv { cin: 3, cout: 64, k: 11, stride: 1, pad: 2 }, b, R, p, b,
                    Op::Conv { cin: 64, cout: 192, k: 5, stride: 1, pad: 2 }, R, p, b,
                    c3(192, 384), R, c3(384, 256), R, c3(256, 256), R,
                ];
                (ops, [3, 7, 11, 13, 15])
            }
        }
    }
}

/// ST-LPIPS's blur-pool on `x` (N×C×H×W).
fn blur_pool(x: &Tensor) -> Tensor {
    let taps = Tensor::from_slice(&[1.0f32, 2.0, 1.0]).to_device(x.device());
    let kernel = (taps.view([3, 1]) * taps.view([1, 3])) / 16.0;
    let channels = x.size()[1];
    let kernel = kernel.view([1, 1, 3, 3]).repeat([channels, 1, 1, 1]).to_kind(x.kind());
    x.reflection_pad2d([2, 2, 2, 2])
        .conv2d(&kernel, None::<Tensor>, [2, 2], [0, 0], [1, 1], channels)
}

enum Layer {
    Conv(nn::Conv2D),
    Relu,
    MaxPool { k: i64, stride: i64 },
    BlurPool,
}

/// An LPIPS model with its weights loaded.
pub struct Lpips {
    _vars: nn::VarStore,
    slices: Vec<Vec<Layer>>,
    heads: Vec<nn::Conv2D>,
}

impl Lpips {
    /// Loads `net` from a safetensors file with the `lpips` package's keys (`net.sliceN.I.weight`,
    /// `linN.model.1.weight`); its constant `scaling_layer.*`, aliased `lins.*` and blur-pool `*.filt`
    /// entries are ignored.
    pub fn open(net: LpipsNet, path: &Path, device: Device) -> Result<Self> {
        Self::from_checkpoint(net, &Checkpoint::open(path)?, device)
    }

    /// ST-LPIPS with the network `scripts/setup.sh` converted from the `stlpips_pytorch` wheel.
    pub fn shift_tolerant(net: LpipsNet, device: Device) -> Result<Self> {
        if !matches!(net, LpipsNet::Vgg16ShiftTolerant | LpipsNet::AlexShiftTolerant) {
            return Err(VaeError::input(
                "st-lpips",
                format!("{net:?} is not a shift-tolerant network"),
            ));
        }
        Self::open(net, &Self::shipped(net)?, device)
    }

    /// LPIPS from the user's backbone: a complete `lpips` state dict, or torchvision's ImageNet
    /// `features.*` weights, completed by the heads the `lpips` wheel ships.
    pub fn with_backbone(net: LpipsNet, backbone: &Path, device: Device) -> Result<Self> {
        let weights = Checkpoint::open(backbone)?;
        if weights.get("lin0.model.1.weight").is_some() {
            return Self::from_checkpoint(net, &weights, device);
        }
        let heads = Checkpoint::open(&Self::shipped(net)?)?;
        Self::from_checkpoint(net, &weights.union(heads)?, device)
    }

    fn shipped(net: LpipsNet) -> Result<PathBuf> {
        let path = net.shipped_weights();
        if !path.is_file() {
            return Err(VaeError::input(
                "perceptual metric",
                format!(
                    "{} is missing: run `make setup` (scripts/setup.sh converts the weights the lpips and \
                     stlpips_pytorch wheels ship), or set {PERCEPTUAL_WEIGHTS_ENV} to the folder holding them",
                    path.display()
                ),
            ));
        }
        Ok(path)
    }

    pub fn from_checkpoint(net: LpipsNet, ckpt: &Checkpoint, device: Device) -> Result<Self> {
        let vars = nn::VarStore::new(device);
        let root = vars.root();
        let (ops, ends) = net.layers();
        let mut slices = Vec::new();
        let mut heads = Vec::new();
        let mut start = 0;
        for (s, &end) in ends.iter().enumerate() {
            let path = &root / "net" / format!("slice{}", s + 1);
            let mut width = 0;
            let slice = (start..end)
                .map(|i| match ops[i] {
                    Op::Conv {
                        cin,
                        cout,
                        k,
                        stride,
                        pad,
                    } => {
                        width = cout;
                        Layer::Conv(conv(&path / i, cin, cout, k, stride, pad, true))
                    }
                    Op::Relu => Layer::Relu,
                    Op::MaxPool { k, stride } => Layer::MaxPool { k, stride },
                    Op::BlurPool => Layer::BlurPool,
                })
                .collect();
            slices.push(slice);
            heads.push(conv(&root / format!("lin{s}") / "model" / 1, width, 1, 1, 1, 0, false));
            start = end;
        }
        let ignored = |k: &str| k.starts_with("scaling_layer.") || k.starts_with("lins.") || k.ends_with(".filt");
        // torchvision numbers `features.I` as the lpips slices do (`net.sliceN.I`).
        let file_keys = |name: &str| {
            let mut keys = vec![name.to_string()];
            if let Some(rest) = name.strip_prefix("net.slice") {
                keys.extend(rest.split_once('.').map(|(_, layer)| format!("features.{layer}")));
            }
            keys
        };
        ckpt.load_into(&[&vars], file_keys, ignored)?;
        // A fixed perceptual metric: gradients flow through it to the images, never into its weights.
        let mut vars = vars;
        vars.freeze();
        Ok(Lpips {
            _vars: vars,
            slices,
            heads,
        })
    }

    /// Per-image LPIPS (shape N) between images in [0, 1], mapped to [-1, 1] as LPIPS expects
    /// (the `lpips` package's `normalize=True`).
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.features_distance(&(a * 2.0 - 1.0), &(b * 2.0 - 1.0))
    }

    /// Per-image LPIPS with [0, 1] images fed unmapped, as the 3DGS and LRF evaluation scripts do
    /// (lpipsPyTorch): only for comparing with their published numbers.
    pub fn distance_3dgs(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.features_distance(a, b)
    }

    fn features_distance(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if a.dim() != 4 || a.size()[1] != 3 || a.size() != b.size() {
            return Err(VaeError::input(
                "lpips",
                format!(
                    "expected two equal N×3×H×W shapes, got {:?} and {:?}",
                    a.size(),
                    b.size()
                ),
            ));
        }
        let shift = Tensor::from_slice(&[-0.030f32, -0.088, -0.188])
            .view([1, 3, 1, 1])
            .to_device(a.device());
        let scale = Tensor::from_slice(&[0.458f32, 0.448, 0.450])
            .view([1, 3, 1, 1])
            .to_device(a.device());
        let (mut fa, mut fb) = ((a - &shift) / &scale, (b - &shift) / &scale);
        let mut total = Tensor::zeros([a.size()[0]], (a.kind(), a.device()));
        for (slice, head) in self.slices.iter().zip(&self.heads) {
            for layer in slice {
                let apply = |x: &Tensor| match layer {
                    Layer::Conv(c) => x.apply(c),
                    Layer::Relu => x.relu(),
                    Layer::MaxPool { k, stride } => x.max_pool2d([*k, *k], [*stride, *stride], [0, 0], [1, 1], false),
                    Layer::BlurPool => blur_pool(x),
                };
                (fa, fb) = (apply(&fa), apply(&fb));
            }
            let unit = |x: &Tensor| x / (x.square().sum_dim_intlist(1, true, None).sqrt() + 1e-10);
            let diff = (unit(&fa) - unit(&fb)).square();
            total += diff.apply(head).mean_dim(&[1i64, 2, 3][..], false, None);
        }
        Ok(total)
    }
}
