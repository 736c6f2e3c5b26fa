//! The Tri-Plane field's parameters and its point query.

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::query::{Activations, PlaneTape, QueryLayers, query_values};
use crate::{NerfError, Result};

/// Sizes; the defaults are IG-AE's (`triplane_resolution 64`, `n_local_features 32`, hidden 64).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriPlaneConfig {
    /// Features per plane texel, F.
    pub features: i64,
    /// Plane resolution, R (R × R texels).
    pub resolution: i64,
    pub hidden: i64,
    /// Latent channels rendered, C.
    pub channels: i64,
}

impl Default for TriPlaneConfig {
    fn default() -> Self {
        TriPlaneConfig {
            features: 32,
            resolution: 64,
            hidden: 64,
            channels: 32,
        }
    }
}

/// Colour bounds: IG-AE's `sigmoid(x)·(1 + 2·0.001) − 0.001`, so 0 and 1 are reachable.
const COLOR_MARGIN: f64 = 0.001;

/// Planes, MLP and background, all trainable variables of the store they were made in. Fields of several
/// scenes may share one MLP and background ([`TriPlaneField::sharing_head`], IG-AE's latent scenes).
pub struct TriPlaneField {
    pub config: TriPlaneConfig,
    /// `[3, F, R, R]`: the xy, xz and yz planes.
    pub planes: Tensor,
    hidden: nn::Linear,
    out: nn::Linear,
    /// `[C]`, the latent seen where rays leave the box; a logit like the colours.
    pub background: Tensor,
}

impl TriPlaneField {
    /// Planes from N(0, 1) as IG-AE initialises them (scaled by `plane_scale`), MLP with tch's default
    /// initialisation, background at the channels' middle, as the variables `planes`, `hidden`, `out` and
    /// `background` under `root` (convert the store with `double()` for f64).
    pub fn new(root: &nn::Path, config: TriPlaneConfig, plane_scale: f64) -> Result<Self> {
        if config.features < 1 || config.resolution < 2 || config.hidden < 1 || config.channels < 1 {
            return Err(NerfError::Input(format!("invalid Tri-Plane sizes {config:?}")));
        }
        let planes = new_planes(root, "planes", config, plane_scale);
        let hidden = nn::linear(root / "hidden", config.features, config.hidden, Default::default());
        let out = nn::linear(root / "out", config.hidden, 1 + config.channels, Default::default());
        let background = root.var("background", &[config.channels], nn::Init::Const(0.0));
        Ok(TriPlaneField {
            config,
            planes,
            hidden,
            out,
            background,
        })
    }

    /// Another scene's field: new planes, the variable `name` under `root`, with this field's MLP and
    /// background (the same variables: their gradients add up).
    pub fn sharing_head(&self, root: &nn::Path, name: &str, plane_scale: f64) -> TriPlaneField {
        let share = |linear: &nn::Linear| nn::Linear {
            ws: linear.ws.shallow_clone(),
            bs: linear.bs.as_ref().map(Tensor::shallow_clone),
        };
        TriPlaneField {
            config: self.config,
            planes: new_planes(root, name, self.config, plane_scale),
            hidden: share(&self.hidden),
            out: share(&self.out),
            background: self.background.shallow_clone(),
        }
    }

    /// The MLP as the query kernels run it, made once for any number of queries (the first layer projects
    /// every texel): `tracked` for queries on a [`PlaneTape`], whose gradient reaches the field through them.
    pub(crate) fn layers(&self, tracked: bool) -> Rc<QueryLayers> {
        let layers = || QueryLayers::new(&self.planes, &self.hidden, &self.out);
        Rc::new(if tracked { layers() } else { tch::no_grad(layers) })
    }

    /// Raw density and colour at points `[N, 3]` in the field's box (`[-1, 1]³`; outside, features are
    /// zero): `([N], [N, C])`, colour as the sigmoid of the logits, in [0, 1]. IG-AE's bounds are affine
    /// ([`to_bounds`]), so renderers apply them once to the composited `[rays, C]` rather than to every
    /// sample. The MLP runs in the query kernels, with `layers` from [`TriPlaneField::layers`]; with a
    /// `tape`, the gradient of the planes and the MLP is handed on by [`PlaneTape::backward`] after the
    /// loss's, and without one, none is tracked.
    pub(crate) fn query(
        &self,
        layers: &Rc<QueryLayers>,
        points: &Tensor,
        tape: Option<&mut PlaneTape>,
    ) -> (Tensor, Tensor) {
        match tape {
            Some(tape) => tape.query(layers, points),
            None => {
                let values = tch::no_grad(|| query_values(layers, points, Activations::Discard));
                (values.sigma, values.color)
            }
        }
    }

    /// The background latent as a colour of the field's query, in [0, 1] before IG-AE's affine bounds.
    pub fn background_color(&self) -> Tensor {
        self.background.sigmoid()
    }
}

fn new_planes(root: &nn::Path, name: &str, config: TriPlaneConfig, plane_scale: f64) -> Tensor {
    let (f, r) = (config.features, config.resolution);
    root.var(
        name,
        &[3, f, r, r],
        nn::Init::Randn {
            mean: 0.0,
            stdev: plane_scale,
        },
    )
}

/// Colours in [0, 1] stretched to IG-AE's bounds.
pub(crate) fn to_bounds(unit: &Tensor) -> Tensor {
    unit * (1.0 + 2.0 * COLOR_MARGIN) - COLOR_MARGIN
}
