//! The perceptual metric's weights as stages name them (LPIPS, user-supplied: none ship with lrf-flow).

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

/// LPIPS weights named in a pipeline: their content hash (for artifact keys) and path.
pub(crate) fn resolve_lpips(spec: &str, base_dir: &Path) -> Result<(String, PathBuf), String> {
    let path = base_dir.join(spec);
    let hash = hash_file(&path).map_err(|e| format!("LPIPS weights {spec:?} ({}): {e}", path.display()))?;
    Ok((hash.to_hex().to_string(), path))
}

pub(crate) fn open_lpips(backbone: LpipsBackbone, path: &Path) -> anyhow::Result<Lpips> {
    let net = match backbone {
        LpipsBackbone::Vgg => LpipsNet::Vgg16,
        LpipsBackbone::Alex => LpipsNet::Alex,
    };
    Lpips::open(net, path, Device::Cpu).with_context(|| format!("LPIPS weights {}", path.display()))
}
