//! Which autoencoder a stage uses: the bundled TAEF2 by default, or a model the user points to.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lrf_graph::key::{KeyHasher, hash_file};
use lrf_graph::scenes::collect_files;
use lrf_graph::{Job, Port};
use lrf_vae::{Autoencoder, TinyAutoencoder, open_autoencoder};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::artifacts::input_dir;

/// The name that selects the bundled model.
pub const BUNDLED: &str = "taef2";
/// The name that makes a stage take its autoencoder from an `autoencoder` input port (a fine-tuned model
/// written by another stage) instead of a file.
pub const FROM_INPUT: &str = "input";
/// The port type of an autoencoder artifact: a folder [`open_autoencoder`] reads (a TAESD encoder/decoder
/// pair or a diffusers folder), written with [`Autoencoder::save_folder`].
pub const AUTOENCODER_TYPE: &str = "autoencoder";

/// Which autoencoder a stage that decodes a latent field's renders uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecodeWith {
    /// The one the field was fitted with, as its manifest records.
    #[default]
    Field,
    /// The model on the `autoencoder` input port (e.g. a decoder aligned by `decoder-align` or `rgb-align`).
    Input,
}

impl DecodeWith {
    pub fn is_field(&self) -> bool {
        *self == DecodeWith::Field
    }

    /// The input port this choice needs: one only for [`DecodeWith::Input`].
    pub fn port(&self) -> Option<Port> {
        (*self == DecodeWith::Input).then(input_port)
    }

    /// The model on the input port for [`DecodeWith::Input`]; `None` means the field's own.
    pub fn input_model(&self, job: &Job) -> anyhow::Result<Option<AutoencoderSource>> {
        match self {
            DecodeWith::Field => Ok(None),
            DecodeWith::Input => AutoencoderSource::from_input(job).map(Some),
        }
    }
}

/// An autoencoder as a stage parameter resolved it: its name as written, its absolute path (none for the
/// bundled model) and a hash of its files, so replacing the weights changes every downstream artifact key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderSource {
    pub name: String,
    pub path: Option<PathBuf>,
    pub content: String,
}

impl AutoencoderSource {
    /// `spec` is `taef2` or a path (relative to `base_dir`) to a TAESD-family folder, a diffusers folder or an
    /// AutoencoderKL safetensors file.
    pub fn resolve(spec: &str, base_dir: &Path) -> Result<Self, String> {
        if spec == BUNDLED {
            return Ok(AutoencoderSource {
                name: BUNDLED.into(),
                path: None,
                content: bundled_content().into(),
            });
        }
        let path = base_dir.join(spec);
        let content = hash_model(&path).map_err(|e| {
            format!(
                "autoencoder {spec:?} ({}): {e:#}; give `taef2` for the bundled model or the path of a TAESD \
                 folder, a diffusers folder or an AutoencoderKL .safetensors file",
                path.display()
            )
        })?;
        Ok(AutoencoderSource {
            name: spec.into(),
            path: Some(path),
            content,
        })
    }

    /// Resolves a stage's `autoencoder` parameter when the pipeline loads. `input` resolves to `None`: that
    /// model is an artifact on the stage's [`autoencoder_port`], known only when the job runs.
    pub fn for_parameter(spec: &str, base_dir: &Path) -> Result<Option<Self>, String> {
        if spec == FROM_INPUT {
            return Ok(None);
        }
        Self::resolve(spec, base_dir).map(Some)
    }

    /// The model a job uses: the one [`Self::for_parameter`] resolved, else the `autoencoder` input artifact.
    pub fn for_job(resolved: Option<&Self>, job: &Job) -> anyhow::Result<Self> {
        match resolved {
            Some(source) => Ok(source.clone()),
            None => Self::from_input(job),
        }
    }

    /// The artifact on a job's `autoencoder` input port.
    fn from_input(job: &Job) -> anyhow::Result<Self> {
        Self::from_artifact(input_dir(job, "autoencoder")?)
    }

    /// An autoencoder artifact produced by a stage (`dir` is its output folder).
    pub fn from_artifact(dir: &Path) -> anyhow::Result<Self> {
        Ok(AutoencoderSource {
            name: format!("artifact {}", dir.display()),
            path: Some(dir.to_path_buf()),
            content: hash_model(dir).with_context(|| format!("autoencoder artifact {}", dir.display()))?,
        })
    }

    /// Loads the model on the CPU.
    pub fn open(&self) -> anyhow::Result<Box<dyn Autoencoder>> {
        let model: Box<dyn Autoencoder> = match &self.path {
            None => Box::new(TinyAutoencoder::taef2(Device::Cpu)?),
            Some(path) => open_autoencoder(path, Device::Cpu)
                .with_context(|| format!("loading autoencoder {:?} from {}", self.name, path.display()))?,
        };
        Ok(model)
    }
}

/// The input port a stage whose `autoencoder` parameter is `spec` needs: one only for `input`.
pub fn autoencoder_port(spec: &str) -> Option<Port> {
    (spec == FROM_INPUT).then(input_port)
}

fn input_port() -> Port {
    Port::new("autoencoder", AUTOENCODER_TYPE)
}

/// The hash of the weights compiled into the binary, computed once.
fn bundled_content() -> &'static str {
    static CONTENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CONTENT.get_or_init(|| {
        let mut hasher = KeyHasher::new("lrf-bundled-autoencoder");
        hasher.field(BUNDLED.as_bytes());
        for weights in TinyAutoencoder::taef2_weights() {
            hasher.field(weights);
        }
        hasher.finish().hex()
    })
}

fn hash_model(path: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    if path.is_dir() {
        collect_files(path, path, &mut files)?;
        files.sort();
    } else if !path.is_file() {
        anyhow::bail!("no such file or folder");
    }
    let mut hasher = KeyHasher::new("lrf-autoencoder");
    if files.is_empty() {
        files.push(PathBuf::new());
    }
    for relative in files {
        // A single file is its own only entry, with an empty relative name.
        let file = if relative.as_os_str().is_empty() {
            path.to_path_buf()
        } else {
            path.join(&relative)
        };
        let hash = hash_file(&file).with_context(|| format!("reading {}", file.display()))?;
        hasher
            .field(relative.to_string_lossy().as_bytes())
            .field(hash.as_bytes());
    }
    Ok(hasher.finish().hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_is_an_error_that_says_what_to_give() {
        let error = AutoencoderSource::resolve("models/nope", Path::new("/tmp")).unwrap_err();
        assert!(error.contains("/tmp/models/nope") && error.contains("taef2"), "{error}");
    }

    #[test]
    fn changing_a_file_changes_the_content_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.safetensors"), b"one").unwrap();
        let a = AutoencoderSource::resolve("w.safetensors", dir.path()).unwrap();
        std::fs::write(dir.path().join("w.safetensors"), b"two").unwrap();
        let b = AutoencoderSource::resolve("w.safetensors", dir.path()).unwrap();
        assert_ne!(a.content, b.content);
        assert_eq!(AutoencoderSource::resolve("taef2", dir.path()).unwrap().path, None);
    }

    /// The bundled model's key part is its weights' hash: the files on disk (which the binary embeds) give it.
    #[test]
    fn the_bundled_model_is_keyed_by_its_weights() {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/taef2");
        let mut hasher = KeyHasher::new("lrf-bundled-autoencoder");
        hasher.field(BUNDLED.as_bytes());
        for file in ["taef2_encoder.safetensors", "taef2_decoder.safetensors"] {
            hasher.field(&std::fs::read(assets.join(file)).unwrap());
        }
        let bundled = AutoencoderSource::resolve(BUNDLED, Path::new(".")).unwrap();
        assert_eq!(bundled.content, hasher.finish().hex());
    }
}
