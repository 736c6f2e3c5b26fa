//! Safetensors checkpoints read into f32 tensors, and matched against a model's parameters with
//! every missing, unexpected and mis-shaped key reported at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor, nn};

use crate::error::{KeyReport, Result, VaeError};

/// The tensors of one safetensors file (or embedded buffer), converted to f32 on the CPU.
pub struct Checkpoint {
    source: String,
    tensors: BTreeMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads a safetensors file. Pickled checkpoints (`.ckpt`, `.pth`, `.bin`) are refused with a
    /// hint: unpickling runs arbitrary code, and safetensors is one `save_file` call away.
    pub fn open(path: &Path) -> Result<Self> {
        let source = path.display().to_string();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("ckpt" | "pth" | "pt" | "bin")
        ) {
            return Err(VaeError::checkpoint(
                source,
                "pickled checkpoints are not read; convert it to safetensors \
                 (safetensors.torch.save_file(torch.load(path)[\"state_dict\"], out))",
            ));
        }
        let file = std::fs::File::open(path).map_err(|source| VaeError::Io {
            path: path.into(),
            source,
        })?;
        // SAFETY: the map is read-only and dropped before this function returns; every tensor is copied out.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| VaeError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_bytes(&source, &map)
    }

    /// Parses a safetensors buffer; `source` names it in errors.
    pub fn from_bytes(source: &str, bytes: &[u8]) -> Result<Self> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| VaeError::checkpoint(source, format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let kind = match view.dtype() {
                Dtype::F32 => Kind::Float,
                Dtype::F16 => Kind::Half,
                Dtype::BF16 => Kind::BFloat16,
                Dtype::F64 => Kind::Double,
                other => {
                    return Err(VaeError::checkpoint(
                        source,
                        format!("{name}: dtype {other:?} is not a float type"),
                    ));
                }
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
                .map_err(|e| VaeError::checkpoint(source, format!("{name}: {e}")))?
                .to_kind(Kind::Float);
            tensors.insert(name, tensor);
        }
        Ok(Checkpoint {
            source: source.to_string(),
            tensors,
        })
    }

    /// Both files' tensors as one checkpoint (a model split over two files); a key in both is an error.
    pub fn union(mut self, other: Checkpoint) -> Result<Checkpoint> {
        if let Some(key) = other.tensors.keys().find(|k| self.tensors.contains_key(*k)) {
            return Err(VaeError::checkpoint(
                format!("{} + {}", self.source, other.source),
                format!("both files hold {key}"),
            ));
        }
        self.tensors.extend(other.tensors);
        self.source = format!("{} + {}", self.source, other.source);
        Ok(self)
    }

    /// Where the tensors came from, as errors name it.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.tensors.get(key)
    }

    pub fn shape(&self, key: &str) -> Option<Vec<i64>> {
        self.tensors.get(key).map(Tensor::size)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The shape of a key the model cannot do without, or an error naming it.
    pub(crate) fn require_shape(&self, key: &str) -> Result<Vec<i64>> {
        self.shape(key)
            .ok_or_else(|| VaeError::checkpoint(&self.source, format!("missing key {key}")))
    }

    /// Copies the checkpoint into every variable of the stores `vars` (one model's halves may live
    /// in separate stores but share one file, whose keys must each be used once). `file_keys` gives, for a variable name,
    /// the keys that may hold it in this file's layout (first found wins); keys for which `ignored`
    /// holds are not reported as unexpected. A 1×1 convolution kernel fills a linear weight of the
    /// same values (LDM stores attention projections as convolutions).
    pub(crate) fn load_into(
        &self,
        vars: &[&nn::VarStore],
        file_keys: impl Fn(&str) -> Vec<String>,
        ignored: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let mut report = KeyReport::default();
        let mut used = BTreeSet::new();
        let variables: BTreeMap<String, Tensor> = vars.iter().flat_map(|v| v.variables()).collect();
        for (name, mut var) in variables {
            let candidates = file_keys(&name);
            let Some(key) = candidates.iter().find(|k| self.tensors.contains_key(*k)) else {
                report.missing.push((candidates[0].clone(), var.size()));
                continue;
            };
            used.insert(key.clone());
            let value = &self.tensors[key];
            let (file_shape, model_shape) = (value.size(), var.size());
            let squeezed: Vec<i64> = match file_shape.iter().rposition(|&d| d != 1) {
                Some(last) => file_shape[..=last].to_vec(),
                None => vec![],
            };
            if file_shape != model_shape && squeezed != model_shape {
                report.mismatched.push((key.clone(), file_shape, model_shape));
                continue;
            }
            tch::no_grad(|| var.copy_(&value.reshape(&model_shape).to_device(var.device())));
        }
        for (key, tensor) in &self.tensors {
            if !used.contains(key) && !ignored(key) {
                report.unexpected.push((key.clone(), tensor.size()));
            }
        }
        if report.is_empty() {
            Ok(())
        } else {
            Err(VaeError::Keys {
                source_name: self.source.clone(),
                report,
            })
        }
    }
}

/// Writes every variable of `vars` to one safetensors file under its own name, so a fine-tuned model
/// is read back by the same loader (and by diffusers or the TAESD reference code).
pub(crate) fn write_vars(vars: &[&nn::VarStore], path: &Path) -> Result<()> {
    let named: BTreeMap<String, Tensor> = vars
        .iter()
        .flat_map(|v| v.variables())
        .map(|(k, t)| (k, t.detach().to_device(tch::Device::Cpu)))
        .collect();
    let named: Vec<(String, Tensor)> = named.into_iter().collect();
    Tensor::write_safetensors(&named, path).map_err(|e| VaeError::checkpoint(path.display().to_string(), e.to_string()))
}
