//! Atomic file writes: a temporary file in the destination folder, synced, then renamed into place.

use std::path::Path;

use crate::{FormatError, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so readers
/// never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| FormatError::io(dir, e))?;
    file.write_all(bytes).map_err(|e| FormatError::io(path, e))?;
    // Temporary files are created owner-only; what we publish is an ordinary readable file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| FormatError::io(path, e))?;
    }
    file.as_file().sync_all().map_err(|e| FormatError::io(path, e))?;
    file.persist(path).map_err(|e| FormatError::io(path, e.error))?;
    Ok(())
}
