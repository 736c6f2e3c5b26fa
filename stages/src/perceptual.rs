//! The perceptual metrics as stages name them: ST-LPIPS, whose weights `scripts/setup.sh` converts from
//! the `stlpips_pytorch` wheel, and LPIPS from the user's ImageNet backbone (the heads ship in the `lpips`
//! wheel; the backbone cannot).

use anyhow::Context;
use lrf_graph::key::hash_file;
use lrf_vae::{Lpips, LpipsNet};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Device;

/// Which network the LPIPS weights are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LpipsBackbone {
    Vgg,
    Alex,
}

/// Which ST-LPIPS network scores images, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShiftTolerantLpips {
    Vgg,
    Alex,
    None,
}

impl ShiftTolerantLpips {
    fn net(self) -> Option<LpipsNet> {
        match self {
            ShiftTolerantLpips::Vgg => Some(LpipsNet::Vgg16ShiftTolerant),
            ShiftTolerantLpips::Alex => Some(LpipsNet::AlexShiftTolerant),
            ShiftTolerantLpips::None => None,
        }
    }

    /// The content hash of the shipped weights (for artifact keys), or an error saying how to get them.
    pub(crate) fn content(self) -> Result<Option<String>, String> {
        let Some(net) = self.net() else { return Ok(None) };
        let path = net.shipped_weights();
        let hash = hash_file(&path).map_err(|e| {
            format!(
                "ST-LPIPS weights {}: {e}; run `make setup` (it converts the weights the stlpips_pytorch wheel \
                 ships), set {} to the folder holding them, or set `st_lpips: none`",
                path.display(),
                lrf_vae::PERCEPTUAL_WEIGHTS_ENV
            )
        })?;
        Ok(Some(hash.to_hex().to_string()))
    }

    pub(crate) fn open(self) -> anyhow::Result<Option<Lpips>> {
        let Some(net) = self.net() else { return Ok(None) };
        Ok(Some(Lpips::shift_tolerant(net, Device::Cpu)?))
    }
}

/// LPIPS weights named in a pipeline: their content hash (for artifact keys) and path.
pub(crate) fn resolve_lpips(spec: &str, base_dir: &Path) -> Result<(String, PathBuf), String> {
    let path = base_dir.join(spec);
    let hash = hash_file(&path).map_err(|e| format!("LPIPS weights {spec:?} ({}): {e}", path.display()))?;
    Ok((hash.to_hex().to_string(), path))
}

/// LPIPS from `path`: a complete `lpips` state dict, or torchvision's backbone completed by the shipped heads.
pub(crate) fn open_lpips(backbone: LpipsBackbone, path: &Path) -> anyhow::Result<Lpips> {
    let net = match backbone {
        LpipsBackbone::Vgg => LpipsNet::Vgg16,
        LpipsBackbone::Alex => LpipsNet::Alex,
    };
    Lpips::with_backbone(net, path, Device::Cpu).with_context(|| format!("LPIPS weights {}", path.display()))
}
