//! Gaussians as tch tensors, the form training and the reference use.

use crate::error::{Result, SplatError};
use crate::options::ColorLayout;
use tch::Tensor;

/// Per-Gaussian parameters: means `[N, 3]`, log-scales `[N, 3]`, unnormalised quaternions `[N, 4]` (w, x, y, z),
/// opacity logits `[N]`, colours `[N, K, C]` (SH, K = 1, 4, 9 or 16) or `[N, C]` (plain). All on one device
/// with one float kind.
#[derive(Debug)]
pub struct Gaussians {
    pub means: Tensor,
    pub log_scales: Tensor,
    pub quats: Tensor,
    pub opacity_logits: Tensor,
    pub colors: Tensor,
}

impl Gaussians {
    pub fn len(&self) -> usize {
        self.opacity_logits.size().first().copied().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tensors in a fixed order: means, log-scales, quaternions, opacity logits, colours.
    pub fn tensors(&self) -> [&Tensor; 5] {
        [
            &self.means,
            &self.log_scales,
            &self.quats,
            &self.opacity_logits,
            &self.colors,
        ]
    }

    /// Gaussians from flat row-major arrays on the CPU: means `N*3`, log-scales `N*3`, quaternions `N*4`,
    /// opacity logits `N` and colors `N*K*C` (`sh_coeffs` K per channel; 0 for plain `[N, C]` colors).
    pub fn from_arrays<T: tch::kind::Element>(
        arrays: [&[T]; 5],
        sh_coeffs: usize,
        channels: usize,
    ) -> Result<Gaussians> {
        let n = arrays[3].len();
        let colors: Vec<i64> = match sh_coeffs {
            0 => vec![n as i64, channels as i64],
            k => vec![n as i64, k as i64, channels as i64],
        };
        let shapes: [Vec<i64>; 5] = [
            vec![n as i64, 3],
            vec![n as i64, 3],
            vec![n as i64, 4],
            vec![n as i64],
            colors,
        ];
        for (name, (array, shape)) in ["means", "log_scales", "quats", "opacity_logits", "colors"]
            .iter()
            .zip(arrays.iter().zip(&shapes))
        {
            let want = shape.iter().product::<i64>() as usize;
            if array.len() != want {
                return Err(SplatError::Shape(format!(
                    "{name} has {} values; {n} Gaussians of shape {shape:?} need {want}",
                    array.len()
                )));
            }
        }
        let [means, log_scales, quats, opacity_logits, colors] =
            std::array::from_fn(|i| Tensor::from_slice(arrays[i]).view(shapes[i].as_slice()));
        Ok(Gaussians {
            means,
            log_scales,
            quats,
            opacity_logits,
            colors,
        })
    }

    /// The same Gaussians with `f` applied to each tensor (a copy, another device or kind, a gradient flag).
    pub fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Gaussians {
        let [means, log_scales, quats, opacity_logits, colors] = self.tensors().map(f);
        Gaussians {
            means,
            log_scales,
            quats,
            opacity_logits,
            colors,
        }
    }

    /// Checks shapes, kinds and devices; returns the colour layout.
    pub fn layout(&self, active_degree: Option<usize>) -> Result<ColorLayout> {
        let bad = |why: String| Err(SplatError::Shape(why));
        if self.tensors().iter().any(|t| !t.defined()) {
            return bad("undefined tensor".into());
        }
        let n = self.opacity_logits.size();
        let [n] = n[..] else {
            return bad(format!("opacity_logits must be [N], got {n:?}"));
        };
        for (name, t, width) in [
            ("means", &self.means, 3),
            ("log_scales", &self.log_scales, 3),
            ("quats", &self.quats, 4),
        ] {
            if t.size() != [n, width] {
                return bad(format!("{name} must be [{n}, {width}], got {:?}", t.size()));
            }
        }
        let colors = self.colors.size();
        if colors.first() != Some(&n) {
            return bad(format!("colors must have {n} rows, got {colors:?}"));
        }
        let kind = self.means.kind();
        if !matches!(kind, tch::Kind::Float | tch::Kind::Double) {
            return bad(format!("Gaussians must be f32 or f64, got {kind:?}"));
        }
        let device = self.means.device();
        if self.tensors().iter().any(|t| t.kind() != kind || t.device() != device) {
            return bad("all Gaussian tensors must share one kind and one device".into());
        }
        let shape: Vec<usize> = colors.iter().map(|&d| d as usize).collect();
        ColorLayout::from_shape(&shape, active_degree)
    }
}
