//! LPIPS (Zhang et al. 2018, v0.1): distances between deep features of a VGG16 or AlexNet backbone,
//! weighted by learned 1×1 heads. The weights are the user's (nothing is downloaded): one safetensors
//! file with the `lpips` package's state dict, e.g.
//! `save_file({k: v.contiguous() for k, v in lpips.LPIPS(net="vgg").state_dict().items()
//! if not k.startswith("lins.")}, "lpips_vgg.safetensors")`.

use std::path::Path;

use tch::{Device, Tensor, nn};

use crate::checkpoint::Checkpoint;
use crate::error::{Result, VaeError};
use crate::layers::conv;

/// The backbone; the LRF paper reports VGG, IG-AE and latent-nerfstudio AlexNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpipsNet {
    Vgg16,
    Alex,
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
        }
    }
}

enum Layer {
    Conv(nn::Conv2D),
    Relu,
    MaxPool { k: i64, stride: i64 },
}

/// An LPIPS model with its weights loaded.
pub struct Lpips {
    _vars: nn::VarStore,
    slices: Vec<Vec<Layer>>,
    heads: Vec<nn::Conv2D>,
}

impl Lpips {
    /// Loads `net` from a safetensors file with the `lpips` package's keys (`net.sliceN.I.weight`,
    /// `linN.model.1.weight`); its constant `scaling_layer.*` and aliased `lins.*` entries are ignored.
    pub fn open(net: LpipsNet, path: &Path, device: Device) -> Result<Self> {
        Self::from_checkpoint(net, &Checkpoint::open(path)?, device)
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
                })
                .collect();
            slices.push(slice);
            heads.push(conv(&root / format!("lin{s}") / "model" / 1, width, 1, 1, 1, 0, false));
            start = end;
        }
        let ignored = |k: &str| k.starts_with("scaling_layer.") || k.starts_with("lins.");
        ckpt.load_into(&[&vars], |name| vec![name.to_string()], ignored)?;
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
