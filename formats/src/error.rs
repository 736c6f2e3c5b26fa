use std::path::{Path, PathBuf};

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// An error reading or writing lrf-flow's files. Every variant names the file; `Invalid` also names
/// the record (for example `image 12 "IMG_4026.JPG"`) so a user can find the bad line or entry.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {record}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        record: String,
        message: String,
    },
}

impl FormatError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn invalid(path: impl AsRef<Path>, record: impl Into<String>, message: impl Into<String>) -> Self {
        FormatError::Invalid {
            path: path.as_ref().to_path_buf(),
            record: record.into(),
            message: message.into(),
        }
    }
}
