//! Tensor shards: safetensors files, read zero-copy through a memory map and written atomically.
//!
//! Every producer of shards (synthetic depth maps, latents, renders) writes through [`write_shard`] or
//! [`write_tch_shard`], and every consumer reads through [`ShardReader`]. Writes go through a temporary
//! file and a rename, which is what makes the memory map sound: a shard on disk is never modified in
//! place, so the bytes a reader maps stay what they were when it opened the file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
pub use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{SafeTensors, tensor::TensorView};

use crate::atomic::write_atomic;
use crate::{FormatError, Result};

// safetensors stores little-endian values; the zero-copy views below reinterpret them as native ones.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "shards are read zero-copy, which needs a little-endian host"
);

/// One f32 tensor to write: name, shape, values in row-major order.
pub struct ShardTensor<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// Writes f32 tensors and string metadata to a safetensors file, atomically.
pub fn write_shard(path: &Path, tensors: &[ShardTensor<'_>], metadata: &HashMap<String, String>) -> Result<()> {
    let views = tensors
        .iter()
        .map(|t| {
            let expected: usize = t.shape.iter().product();
            if expected != t.data.len() {
                return Err(FormatError::invalid(
                    path,
                    tensor_record(t.name),
                    format!(
                        "shape {:?} holds {expected} values but {} were given",
                        t.shape,
                        t.data.len()
                    ),
                ));
            }
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(t.data))
                .map_err(|e| FormatError::invalid(path, tensor_record(t.name), e.to_string()))?;
            Ok((t.name, view))
        })
        .collect::<Result<Vec<_>>>()?;
    write_views(path, views, metadata)
}

/// The one place shards are serialised, so f32 and tch writers produce identical layouts and share
/// the atomic rename.
pub(crate) fn write_views(
    path: &Path,
    views: Vec<(&str, TensorView<'_>)>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    // safetensors would keep only the last of two equal names in the header while writing both
    // tensors' bytes, producing a file that no reader accepts.
    let mut seen = HashSet::with_capacity(views.len());
    if let Some((name, _)) = views.iter().find(|(name, _)| !seen.insert(*name)) {
        return Err(FormatError::invalid(path, tensor_record(name), "name given twice"));
    }
    let metadata = (!metadata.is_empty()).then(|| metadata.clone());
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| FormatError::invalid(path, "shard", format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

fn tensor_record(name: &str) -> String {
    format!("tensor {name:?}")
}

/// A value type a shard tensor can be read as, zero-copy.
pub trait ShardElement: bytemuck::Pod {
    const DTYPE: Dtype;
}

impl ShardElement for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl ShardElement for f64 {
    const DTYPE: Dtype = Dtype::F64;
}
impl ShardElement for i64 {
    const DTYPE: Dtype = Dtype::I64;
}
impl ShardElement for u8 {
    const DTYPE: Dtype = Dtype::U8;
}

/// A safetensors file mapped into memory, its header parsed once.
///
/// The reader keeps the parsed header (which owns its strings and offsets) next to the map rather than
/// a `SafeTensors<'_>` borrowing it, so it can be moved and stored freely; tensor bytes are sliced
/// out of the map on demand.
pub struct ShardReader {
    path: PathBuf,
    mmap: Mmap,
    header: Metadata,
    /// Where the data section starts: safetensors offsets count from the byte after the 8-byte length
    /// and the JSON header.
    data_start: usize,
    /// Sorted, so listings are reproducible whatever order the writer chose.
    names: Vec<String>,
}

impl ShardReader {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        // SAFETY: shards are only ever written through `write_atomic`, a temporary file renamed over the
        // destination, so the inode mapped here is never truncated or modified in place; a rewrite of the
        // same path replaces the directory entry and leaves this mapping on the old, unchanged file.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        let (header_len, header) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| FormatError::invalid(path, "header", format!("not a safetensors file: {e}")))?;
        let mut names: Vec<String> = header.offset_keys();
        names.sort_unstable();
        Ok(ShardReader {
            path: path.to_path_buf(),
            mmap,
            header,
            data_start: 8 + header_len,
            names,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names in lexicographic order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The file's `__metadata__` string map, if the writer gave one.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.header.metadata().as_ref()
    }

    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.info(name)?.shape)
    }

    pub fn dtype(&self, name: &str) -> Result<Dtype> {
        Ok(self.info(name)?.dtype)
    }

    /// The tensor's f32 values, borrowed straight from the map (see [`values`](Self::values)).
    pub fn f32(&self, name: &str) -> Result<&[f32]> {
        self.values(name)
    }

    /// The tensor's values, borrowed straight from the map; the file's dtype must be `T`'s.
    ///
    /// Fails rather than copies when the data is not aligned for `T`; files written by safetensors pad
    /// the header to 8 bytes, so that only happens with foreign writers, for which
    /// [`to_vec_f32`](Self::to_vec_f32) still works.
    pub fn values<T: ShardElement>(&self, name: &str) -> Result<&[T]> {
        let bytes = self.typed_bytes(name, T::DTYPE)?;
        bytemuck::try_cast_slice(bytes).map_err(|e| {
            FormatError::invalid(
                &self.path,
                tensor_record(name),
                format!(
                    "{} data is not aligned in the file ({e}); read it with to_vec_f32",
                    T::DTYPE
                ),
            )
        })
    }

    /// The tensor's values, copied, whatever their alignment in the file.
    pub fn to_vec_f32(&self, name: &str) -> Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(self.typed_bytes(name, Dtype::F32)?))
    }

    fn typed_bytes(&self, name: &str, dtype: Dtype) -> Result<&[u8]> {
        let (info, bytes) = self.entry(name)?;
        if info.dtype != dtype {
            return Err(FormatError::invalid(
                &self.path,
                tensor_record(name),
                format!("holds {} values, not {dtype}", info.dtype),
            ));
        }
        Ok(bytes)
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.header
            .info(name)
            .ok_or_else(|| FormatError::invalid(&self.path, tensor_record(name), "no such tensor in the shard"))
    }

    fn entry(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.info(name)?;
        // `read_metadata` has already checked that the offsets tile the data section exactly; the checked
        // arithmetic keeps a bad file an error should that ever change.
        let (start, end) = info.data_offsets;
        let bytes = self
            .data_start
            .checked_add(start)
            .zip(self.data_start.checked_add(end))
            .and_then(|(start, end)| self.mmap.get(start..end))
            .ok_or_else(|| {
                FormatError::invalid(
                    &self.path,
                    tensor_record(name),
                    format!("data offsets {start}..{end} lie outside the file"),
                )
            })?;
        Ok((info, bytes))
    }
}

#[cfg(feature = "tch")]
pub use self::torch::{BorrowedTensor, write_tch_shard};

#[cfg(feature = "tch")]
mod torch {
    use std::collections::HashMap;
    use std::marker::PhantomData;
    use std::ops::Deref;
    use std::path::Path;

    use safetensors::Dtype;
    use safetensors::tensor::{TensorInfo, TensorView};
    use tch::{Device, Kind, Tensor};

    use super::{ShardReader, tensor_record, write_views};
    use crate::{FormatError, Result};

    // tch has its own conversions, but for the safetensors 0.3 it links, not the 0.8 this crate uses.
    fn kind_of(dtype: Dtype) -> Option<Kind> {
        Some(match dtype {
            Dtype::BOOL => Kind::Bool,
            Dtype::U8 => Kind::Uint8,
            Dtype::I8 => Kind::Int8,
            Dtype::I16 => Kind::Int16,
            Dtype::I32 => Kind::Int,
            Dtype::I64 => Kind::Int64,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            _ => return None,
        })
    }

    fn dtype_of(kind: Kind) -> Option<Dtype> {
        Some(match kind {
            Kind::Bool => Dtype::BOOL,
            Kind::Uint8 => Dtype::U8,
            Kind::Int8 => Dtype::I8,
            Kind::Int16 => Dtype::I16,
            Kind::Int => Dtype::I32,
            Kind::Int64 => Dtype::I64,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Float => Dtype::F32,
            Kind::Double => Dtype::F64,
            _ => return None,
        })
    }

    /// A CPU tensor whose storage is the reader's memory map.
    ///
    /// The map is read-only, so writing through this tensor (an in-place op, `copy_`, an optimiser step)
    /// kills the process with a segmentation fault, and libtorch does not know the storage is borrowed:
    /// a `shallow_clone` or a view taken from it must not outlive the reader. Use
    /// [`ShardReader::tensor`] for a tensor of one's own.
    pub struct BorrowedTensor<'a> {
        tensor: Tensor,
        _reader: PhantomData<&'a ShardReader>,
    }

    impl Deref for BorrowedTensor<'_> {
        type Target = Tensor;

        fn deref(&self) -> &Tensor {
            &self.tensor
        }
    }

    impl ShardReader {
        /// The tensor, copied into memory libtorch owns, with the file's dtype.
        pub fn tensor(&self, name: &str) -> Result<Tensor> {
            let (info, bytes) = self.entry(name)?;
            let (kind, size) = self.kind_and_size(name, info)?;
            // `read_metadata` checked that `bytes` holds exactly shape × dtype size bytes, and `kind_of`
            // maps each dtype to a kind of the same element size, so libtorch reads only those bytes.
            Tensor::f_from_data_size(bytes, &size, kind)
                .map_err(|e| FormatError::invalid(&self.path, tensor_record(name), e.to_string()))
        }

        /// The tensor without a copy: libtorch reads the mapped file directly. See [`BorrowedTensor`] for
        /// what the caller must not do with it.
        pub fn borrow_tensor(&self, name: &str) -> Result<BorrowedTensor<'_>> {
            let (info, bytes) = self.entry(name)?;
            let (kind, size) = self.kind_and_size(name, info)?;
            if !(bytes.as_ptr() as usize).is_multiple_of(kind.elt_size_in_bytes()) {
                return Err(FormatError::invalid(
                    &self.path,
                    tensor_record(name),
                    format!("{} data is misaligned in the file; read it with tensor()", info.dtype),
                ));
            }
            // SAFETY: `bytes` is an aligned, in-bounds slice of the map holding exactly shape × element size
            // bytes (checked by `read_metadata` and above). The map lives as long as `self`, which the
            // returned wrapper borrows, and libtorch is given no deleter, so it never frees the storage.
            // The map is read-only; the wrapper's contract forbids writes through the tensor.
            let tensor = unsafe { Tensor::f_from_blob(bytes.as_ptr(), &size, &[], kind, Device::Cpu) }
                .map_err(|e| FormatError::invalid(&self.path, tensor_record(name), e.to_string()))?;
            Ok(BorrowedTensor {
                tensor,
                _reader: PhantomData,
            })
        }

        fn kind_and_size(&self, name: &str, info: &TensorInfo) -> Result<(Kind, Vec<i64>)> {
            let invalid = |message: String| FormatError::invalid(&self.path, tensor_record(name), message);
            let kind = kind_of(info.dtype).ok_or_else(|| invalid(format!("dtype {} has no tch kind", info.dtype)))?;
            let size = info
                .shape
                .iter()
                .map(|&d| i64::try_from(d).map_err(|_| invalid(format!("dimension {d} is too large"))))
                .collect::<Result<_>>()?;
            Ok((kind, size))
        }
    }

    /// Writes tch tensors, each with its own dtype, and string metadata to a safetensors file, atomically.
    /// Tensors on a GPU or with strides are brought to contiguous CPU memory first.
    pub fn write_tch_shard(path: &Path, tensors: &[(&str, &Tensor)], metadata: &HashMap<String, String>) -> Result<()> {
        let host = tensors
            .iter()
            .map(|&(name, tensor)| {
                let invalid = |message: String| FormatError::invalid(path, tensor_record(name), message);
                // tch panics on the shape of an undefined tensor.
                if !tensor.defined() {
                    return Err(invalid("undefined tensor".to_string()));
                }
                let kind = tensor.f_kind().map_err(|e| invalid(e.to_string()))?;
                let dtype = dtype_of(kind).ok_or_else(|| invalid(format!("kind {kind:?} has no safetensors dtype")))?;
                let size = tensor.size();
                let shape = size
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| invalid(format!("negative dimension in {size:?}"))))
                    .collect::<Result<Vec<usize>>>()?;
                let numel: usize = shape.iter().product();
                let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
                // libtorch makes a contiguous CPU copy when needed before copying out.
                tensor
                    .f_copy_data_u8(&mut bytes, numel)
                    .map_err(|e| invalid(e.to_string()))?;
                Ok((name, dtype, shape, bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        let views = host
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|view| (*name, view))
                    .map_err(|e| FormatError::invalid(path, tensor_record(name), e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        write_views(path, views, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|&(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn depth_and_normals(path: &Path) {
        let depth: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let normals: Vec<f32> = (0..24).map(|i| -(i as f32)).collect();
        write_shard(
            path,
            &[
                ShardTensor {
                    name: "depth",
                    shape: vec![2, 3],
                    data: &depth,
                },
                ShardTensor {
                    name: "normals",
                    shape: vec![2, 3, 4],
                    data: &normals,
                },
            ],
            &metadata(&[("scene", "garden"), ("view", "12")]),
        )
        .unwrap();
    }

    fn assert_names_file(err: FormatError, path: &Path, tensor: Option<&str>) {
        let message = err.to_string();
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(message.contains(file), "{message:?} does not name {file}");
        if let Some(tensor) = tensor {
            assert!(message.contains(tensor), "{message:?} does not name {tensor}");
        }
    }

    #[test]
    fn f32_round_trip_keeps_values_shapes_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.safetensors");
        depth_and_normals(&path);

        let reader = ShardReader::open(&path).unwrap();
        assert_eq!(reader.path(), path);
        assert_eq!(reader.names().collect::<Vec<_>>(), ["depth", "normals"]);
        assert_eq!(
            reader.metadata(),
            Some(&metadata(&[("scene", "garden"), ("view", "12")]))
        );
        assert_eq!(reader.shape("depth").unwrap(), [2, 3]);
        assert_eq!(reader.shape("normals").unwrap(), [2, 3, 4]);
        assert_eq!(reader.dtype("depth").unwrap(), Dtype::F32);
        assert_eq!(reader.f32("depth").unwrap(), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(
            reader.to_vec_f32("normals").unwrap(),
            (0..24).map(|i| -(i as f32)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn shard_without_metadata_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bare.safetensors");
        write_shard(
            &path,
            &[ShardTensor {
                name: "x",
                shape: vec![0],
                data: &[],
            }],
            &HashMap::new(),
        )
        .unwrap();
        let reader = ShardReader::open(&path).unwrap();
        assert_eq!(reader.metadata(), None);
        assert_eq!(reader.f32("x").unwrap(), [] as [f32; 0]);
    }

    #[test]
    fn f32_slice_points_into_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.safetensors");
        depth_and_normals(&path);

        let reader = ShardReader::open(&path).unwrap();
        let map = reader.mmap.as_ptr_range();
        for name in ["depth", "normals"] {
            let values = reader.f32(name).unwrap().as_ptr_range();
            assert!(
                map.start <= values.start.cast() && values.end.cast() <= map.end,
                "{name} was copied"
            );
        }
    }

    #[test]
    fn truncated_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.safetensors");
        depth_and_normals(&path);
        let bytes = std::fs::read(&path).unwrap();
        for len in [0, 5, 8, 20, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..len]).unwrap();
            assert_names_file(ShardReader::open(&path).err().unwrap(), &path, None);
        }
    }

    #[test]
    fn garbage_header_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.safetensors");
        let header = b"{\"depth\": not json at all}";
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        std::fs::write(&path, &bytes).unwrap();
        assert_names_file(ShardReader::open(&path).err().unwrap(), &path, None);

        // A length field that promises more header than the file holds.
        std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
        assert_names_file(ShardReader::open(&path).err().unwrap(), &path, None);
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.safetensors");
        assert_names_file(ShardReader::open(&path).err().unwrap(), &path, None);
    }

    #[test]
    fn missing_tensor_is_an_error_naming_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.safetensors");
        depth_and_normals(&path);
        let reader = ShardReader::open(&path).unwrap();
        assert_names_file(reader.f32("albedo").unwrap_err(), &path, Some("albedo"));
        assert_names_file(reader.to_vec_f32("albedo").unwrap_err(), &path, Some("albedo"));
        assert_names_file(reader.shape("albedo").unwrap_err(), &path, Some("albedo"));
    }

    #[test]
    fn dtype_mismatch_is_an_error_naming_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.safetensors");
        let ids = [1i32, 2, 3];
        let view = TensorView::new(Dtype::I32, vec![3], bytemuck::cast_slice(&ids)).unwrap();
        write_views(&path, vec![("point_ids", view)], &HashMap::new()).unwrap();

        let reader = ShardReader::open(&path).unwrap();
        assert_eq!(reader.dtype("point_ids").unwrap(), Dtype::I32);
        let err = reader.f32("point_ids").unwrap_err();
        assert!(err.to_string().contains("I32"), "{err}");
        assert_names_file(err, &path, Some("point_ids"));
        assert_names_file(reader.to_vec_f32("point_ids").unwrap_err(), &path, Some("point_ids"));
    }

    #[test]
    fn misaligned_f32_data_is_refused_zero_copy_but_copies() {
        // A foreign writer that does not pad the header: a 1-byte-longer header shifts the data off 4 bytes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foreign.safetensors");
        let header = br#"{"depth":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert_ne!(header.len() % 4, 0);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(bytemuck::cast_slice(&[1.5f32, -2.0]));
        std::fs::write(&path, &bytes).unwrap();

        let reader = ShardReader::open(&path).unwrap();
        assert_names_file(reader.f32("depth").unwrap_err(), &path, Some("depth"));
        assert_eq!(reader.to_vec_f32("depth").unwrap(), [1.5, -2.0]);
    }

    #[test]
    fn shape_that_does_not_match_the_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let err = write_shard(
            &path,
            &[ShardTensor {
                name: "depth",
                shape: vec![2, 2],
                data: &[1.0],
            }],
            &HashMap::new(),
        )
        .unwrap_err();
        assert_names_file(err, &path, Some("depth"));
        assert!(!path.exists());
    }

    #[test]
    fn duplicate_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("twice.safetensors");
        let tensors = [
            ShardTensor {
                name: "depth",
                shape: vec![1],
                data: &[1.0],
            },
            ShardTensor {
                name: "depth",
                shape: vec![1],
                data: &[2.0],
            },
        ];
        assert_names_file(
            write_shard(&path, &tensors, &HashMap::new()).unwrap_err(),
            &path,
            Some("depth"),
        );
        assert!(!path.exists());
    }

    #[test]
    fn rewrite_replaces_the_file_whole_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latents.safetensors");
        let old: Vec<f32> = (0..4096).map(|i| i as f32).collect();
        write_shard(
            &path,
            &[ShardTensor {
                name: "z",
                shape: vec![4096],
                data: &old,
            }],
            &metadata(&[("step", "1")]),
        )
        .unwrap();
        let old_reader = ShardReader::open(&path).unwrap();

        write_shard(
            &path,
            &[ShardTensor {
                name: "w",
                shape: vec![2],
                data: &[7.0, 8.0],
            }],
            &HashMap::new(),
        )
        .unwrap();

        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["latents.safetensors"]);
        let reader = ShardReader::open(&path).unwrap();
        assert_eq!(reader.names().collect::<Vec<_>>(), ["w"]);
        assert_eq!(reader.metadata(), None);
        assert_eq!(reader.f32("w").unwrap(), [7.0, 8.0]);
        // The rename left the old inode, and so the earlier map, untouched: the premise of the mmap's SAFETY.
        assert_eq!(old_reader.f32("z").unwrap(), old);
    }

    #[cfg(feature = "tch")]
    mod torch {
        use tch::{Device, Kind, Tensor};

        use super::*;

        fn assorted() -> Vec<(&'static str, Tensor)> {
            vec![
                (
                    "float",
                    Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]) / 3.0,
                ),
                (
                    "double",
                    Tensor::from_slice(&[1.0f64 / 3.0, -2.5, 1e300]).reshape([3, 1]),
                ),
                ("int64", Tensor::from_slice(&[i64::MIN, -1, 0, i64::MAX])),
                ("uint8", Tensor::from_slice(&[0u8, 7, 255]).reshape([1, 3])),
                ("half", Tensor::from_slice(&[0.5f32, -1.25]).to_kind(Kind::Half)),
                ("bfloat16", Tensor::from_slice(&[0.5f32, 3.0]).to_kind(Kind::BFloat16)),
                ("int32", Tensor::from_slice(&[-3i32, 9])),
                ("bool", Tensor::from_slice(&[true, false, true])),
            ]
        }

        fn write_assorted(path: &Path) -> Vec<(&'static str, Tensor)> {
            let tensors = assorted();
            let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
            write_tch_shard(path, &refs, &metadata(&[("stage", "vae-encode")])).unwrap();
            tensors
        }

        #[test]
        fn tch_round_trip_keeps_dtype_and_values() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("assorted.safetensors");
            let written = write_assorted(&path);

            let reader = ShardReader::open(&path).unwrap();
            assert_eq!(reader.metadata(), Some(&metadata(&[("stage", "vae-encode")])));
            for (name, expected) in &written {
                let read = reader.tensor(name).unwrap();
                assert_eq!(read.kind(), expected.kind(), "{name}");
                assert!(read.equal(expected), "{name}: {read:?} != {expected:?}");
            }
            assert_eq!(
                reader.f32("float").unwrap(),
                Vec::<f32>::try_from(&written[0].1.flatten(0, -1)).unwrap()
            );
        }

        #[test]
        fn strided_tensor_is_written_in_logical_order() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("transposed.safetensors");
            let transposed = Tensor::arange(6, (Kind::Float, Device::Cpu))
                .reshape([2, 3])
                .transpose(0, 1);
            assert!(!transposed.is_contiguous());
            write_tch_shard(&path, &[("t", &transposed)], &HashMap::new()).unwrap();

            let reader = ShardReader::open(&path).unwrap();
            assert_eq!(reader.shape("t").unwrap(), [3, 2]);
            assert_eq!(reader.f32("t").unwrap(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        }

        #[test]
        fn unsupported_or_undefined_tensor_is_an_error_naming_file_and_tensor() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("complex.safetensors");
            let spectrum = Tensor::zeros([2], (Kind::ComplexFloat, Device::Cpu));
            let err = write_tch_shard(&path, &[("spectrum", &spectrum)], &HashMap::new()).unwrap_err();
            assert_names_file(err, &path, Some("spectrum"));
            let err = write_tch_shard(&path, &[("nothing", &Tensor::new())], &HashMap::new()).unwrap_err();
            assert_names_file(err, &path, Some("nothing"));
            assert!(!path.exists());
        }

        #[test]
        fn tensor_of_missing_name_is_an_error_naming_file_and_tensor() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("assorted.safetensors");
            write_assorted(&path);
            let reader = ShardReader::open(&path).unwrap();
            assert_names_file(reader.tensor("albedo").unwrap_err(), &path, Some("albedo"));
            assert_names_file(reader.borrow_tensor("albedo").err().unwrap(), &path, Some("albedo"));
        }

        #[test]
        fn borrowed_tensor_reads_the_map_in_place() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("assorted.safetensors");
            let written = write_assorted(&path);

            let reader = ShardReader::open(&path).unwrap();
            let map = reader.mmap.as_ptr_range();
            for (name, expected) in &written {
                let borrowed = reader.borrow_tensor(name).unwrap();
                let data = borrowed.data_ptr().cast::<u8>().cast_const();
                assert!(map.start <= data && data < map.end, "{name} was copied");
                assert_eq!(borrowed.device(), Device::Cpu);
                assert!(borrowed.equal(expected), "{name}: {:?} != {expected:?}", *borrowed);
            }
        }

        #[test]
        fn tch_reads_what_write_tch_shard_wrote() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("assorted.safetensors");
            let written = write_assorted(&path);

            let read: HashMap<String, Tensor> = Tensor::read_safetensors(&path).unwrap().into_iter().collect();
            assert_eq!(read.len(), written.len());
            for (name, expected) in &written {
                let read = &read[*name];
                assert_eq!(read.kind(), expected.kind(), "{name}");
                assert!(read.equal(expected), "{name}: {read:?} != {expected:?}");
            }
        }

        #[test]
        fn shard_reader_reads_what_tch_wrote() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("by-tch.safetensors");
            let written = assorted();
            Tensor::write_safetensors(&written, &path).unwrap();

            let reader = ShardReader::open(&path).unwrap();
            let mut names: Vec<_> = written.iter().map(|(n, _)| *n).collect();
            names.sort_unstable();
            assert_eq!(reader.names().collect::<Vec<_>>(), names);
            for (name, expected) in &written {
                assert_eq!(
                    reader.shape(name).unwrap(),
                    expected.size().iter().map(|&d| d as usize).collect::<Vec<_>>()
                );
                assert!(reader.tensor(name).unwrap().equal(expected), "{name}");
                assert!(reader.borrow_tensor(name).unwrap().equal(expected), "{name}");
            }
            let floats: Vec<f32> = Vec::try_from(&written[0].1.flatten(0, -1)).unwrap();
            assert_eq!(reader.f32("float").unwrap(), floats);
        }
    }
}
