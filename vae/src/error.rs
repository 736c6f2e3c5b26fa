use std::path::PathBuf;

pub type Result<T, E = VaeError> = std::result::Result<T, E>;

/// An error loading or running an autoencoder. Every checkpoint error names its source (a file path,
/// or the name of the embedded weights) and, where one is at fault, the key.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: {message}")]
    Checkpoint { source_name: String, message: String },
    #[error("{source_name}: does not match the model:\n{report}")]
    Keys { source_name: String, report: KeyReport },
    #[error("{what}: {message}")]
    Input { what: String, message: String },
}

impl VaeError {
    pub(crate) fn checkpoint(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        VaeError::Checkpoint {
            source_name: source_name.into(),
            message: message.into(),
        }
    }

    pub(crate) fn input(what: impl Into<String>, message: impl Into<String>) -> Self {
        VaeError::Input {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// What went wrong matching a checkpoint's tensors to a model's parameters, all of it at once, so a
/// user converting a checkpoint sees every problem in one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyReport {
    /// Keys the model needs that the file lacks, with the shape the model expects.
    pub missing: Vec<(String, Vec<i64>)>,
    /// Keys in the file that the model does not use, with their shapes.
    pub unexpected: Vec<(String, Vec<i64>)>,
    /// Keys present in both with different shapes: (key, shape in the file, shape the model expects).
    pub mismatched: Vec<(String, Vec<i64>, Vec<i64>)>,
}

impl KeyReport {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl std::fmt::Display for KeyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.missing.is_empty() {
            writeln!(f, "  missing keys ({}):", self.missing.len())?;
            for (key, shape) in &self.missing {
                writeln!(f, "    {key} {shape:?}")?;
            }
        }
        if !self.unexpected.is_empty() {
            writeln!(f, "  unexpected keys ({}):", self.unexpected.len())?;
            for (key, shape) in &self.unexpected {
                writeln!(f, "    {key} {shape:?}")?;
            }
        }
        if !self.mismatched.is_empty() {
            writeln!(f, "  shape mismatches ({}):", self.mismatched.len())?;
            for (key, file, model) in &self.mismatched {
                writeln!(f, "    {key}: file {file:?}, model {model:?}")?;
            }
        }
        Ok(())
    }
}
