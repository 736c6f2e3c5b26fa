//! A cache of scene files' content hashes, so that opening a pipeline over a large corpus stats its files
//! instead of reading them. An entry is reused only while the file's size, modification time, status-change
//! time and inode are all unchanged (the status-change time moves on any write, even one that restores the
//! modification time); otherwise the file is hashed again. `rehash` ignores the cache and refreshes it.
//!
//! Stored in `<work_dir>/file-hashes.bin`, written atomically, holding the files seen by the last open. The
//! format is a header line then one record per file: path length (u32 LE), path bytes, size, mtime (ns),
//! ctime (ns), inode (u64 LE each), blake3 hash (32 bytes). A damaged file is ignored (everything is hashed).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const HEADER: &[u8] = b"lrf-flow file hashes v1\n";
pub const FILE_HASHES: &str = "file-hashes.bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: i64,
    ctime: i64,
    inode: u64,
}

impl Stamp {
    fn of(metadata: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: metadata.size(),
            mtime: metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(),
            ctime: metadata.ctime() * 1_000_000_000 + metadata.ctime_nsec(),
            inode: metadata.ino(),
        }
    }
}

/// File content hashes by path, checked against each file's stamp.
pub struct FileHashes {
    path: Option<PathBuf>,
    rehash: bool,
    previous: HashMap<PathBuf, (Stamp, [u8; 32])>,
    seen: Mutex<HashMap<PathBuf, (Stamp, [u8; 32])>>,
    hashed: Mutex<usize>,
}

impl FileHashes {
    /// No persistence: every file is hashed (tests, one-off tools).
    pub fn none() -> FileHashes {
        FileHashes {
            path: None,
            rehash: true,
            previous: HashMap::new(),
            seen: Mutex::new(HashMap::new()),
            hashed: Mutex::new(0),
        }
    }

    /// The cache of `work_dir`; with `rehash`, every file is hashed and the cache rewritten.
    pub fn open(work_dir: &Path, rehash: bool) -> FileHashes {
        let path = work_dir.join(FILE_HASHES);
        let previous = if rehash {
            HashMap::new()
        } else {
            std::fs::read(&path).map(|b| parse(&b)).unwrap_or_default()
        };
        FileHashes {
            path: Some(path),
            rehash,
            previous,
            seen: Mutex::new(HashMap::new()),
            hashed: Mutex::new(0),
        }
    }

    /// The blake3 hash of `path`'s content: from the cache when its stamp is unchanged, else read.
    pub fn hash(&self, path: &Path) -> std::io::Result<blake3::Hash> {
        let stamp = Stamp::of(&std::fs::metadata(path)?);
        if !self.rehash
            && let Some((cached, hash)) = self.previous.get(path)
            && *cached == stamp
        {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_path_buf(), (stamp, *hash));
            return Ok(blake3::Hash::from_bytes(*hash));
        }
        let hash = crate::key::hash_file(path)?;
        // A file that changed while it was read is not cached: its next open hashes it again.
        if Stamp::of(&std::fs::metadata(path)?) == stamp {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_path_buf(), (stamp, *hash.as_bytes()));
        }
        *self.hashed.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(hash)
    }

    /// How many files were read (not taken from the cache) so far.
    pub fn files_hashed(&self) -> usize {
        *self.hashed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the entries seen since opening, atomically; a failure is only a slower next open.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = HEADER.to_vec();
        for (file, (stamp, hash)) in seen.iter() {
            let name = file.as_os_str().as_bytes();
            bytes.extend((name.len() as u32).to_le_bytes());
            bytes.extend(name);
            for value in [stamp.size, stamp.mtime as u64, stamp.ctime as u64, stamp.inode] {
                bytes.extend(value.to_le_bytes());
            }
            bytes.extend(hash);
        }
        let write = || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let mut file = tempfile::NamedTempFile::new_in(dir)?;
            file.write_all(&bytes)?;
            file.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!("could not save the file hash cache {}: {e}", path.display());
        }
    }
}

fn parse(bytes: &[u8]) -> HashMap<PathBuf, (Stamp, [u8; 32])> {
    let mut out = HashMap::new();
    let Some(mut rest) = bytes.strip_prefix(HEADER) else {
        return out;
    };
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    while rest.len() >= 4 {
        let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        if rest.len() < 4 + n + 32 + 32 {
            return HashMap::new(); // truncated: trust none of it
        }
        let name = std::ffi::OsStr::from_bytes(&rest[4..4 + n]);
        let fields = &rest[4 + n..];
        let stamp = Stamp {
            size: u64_at(fields, 0),
            mtime: u64_at(fields, 8) as i64,
            ctime: u64_at(fields, 16) as i64,
            inode: u64_at(fields, 24),
        };
        let hash: [u8; 32] = fields[32..64].try_into().unwrap();
        out.insert(PathBuf::from(name), (stamp, hash));
        rest = &fields[64..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_come_from_the_cache_and_edits_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
        std::fs::write(&a, b"first").unwrap();
        std::fs::write(&b, b"second").unwrap();
        let cache = FileHashes::open(dir.path(), false);
        let (ha, hb) = (cache.hash(&a).unwrap(), cache.hash(&b).unwrap());
        assert_eq!(cache.files_hashed(), 2);
        cache.save();

        let cache = FileHashes::open(dir.path(), false);
        assert_eq!(cache.hash(&a).unwrap(), ha);
        assert_eq!(cache.hash(&b).unwrap(), hb);
        assert_eq!(cache.files_hashed(), 0, "both from the cache");
        // An edit of the same size, even with the old modification time put back, is hashed again.
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::write(&a, b"FIRST").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        cache.save();
        let cache = FileHashes::open(dir.path(), false);
        assert_eq!(cache.hash(&a).unwrap(), blake3::hash(b"FIRST"));
        assert_eq!(cache.files_hashed(), 1);
        // rehash reads everything.
        let cache = FileHashes::open(dir.path(), true);
        cache.hash(&a).unwrap();
        cache.hash(&b).unwrap();
        assert_eq!(cache.files_hashed(), 2);
    }

    #[test]
    fn a_damaged_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let cache = FileHashes::open(dir.path(), false);
        cache.hash(&a).unwrap();
        cache.save();
        let file = dir.path().join(FILE_HASHES);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 5]).unwrap();
        let cache = FileHashes::open(dir.path(), false);
        assert_eq!(cache.hash(&a).unwrap(), blake3::hash(b"x"));
        assert_eq!(cache.files_hashed(), 1);
    }
}
