//! Pixel correspondences between the views of one ingested scene (LRF's Stage I): pairs of pixels that see
//! the same 3D point, with the APE weight of their pair of views.
//!
//! ```text
//! correspondences/correspondences.safetensors
//!   view_i, view_j    i64 [M]     indices into the scene's views.json
//!   pixel_i, pixel_j  f32 [M, 2]  (x, y) in the ingested (cropped) images, pixel centres at +0.5
//!   ape               f32 [M]     ‖P_i⁻¹ P_j − I‖_F of the two views' 4×4 camera-to-world poses
//! ```

use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::shard::{ShardReader, write_views};
use crate::{FormatError, Result};

pub const CORRESPONDENCES_FILE: &str = "correspondences.safetensors";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Correspondences {
    pub view_i: Vec<i64>,
    pub view_j: Vec<i64>,
    pub pixel_i: Vec<[f32; 2]>,
    pub pixel_j: Vec<[f32; 2]>,
    pub ape: Vec<f32>,
}

fn view<'a>(dtype: Dtype, shape: Vec<usize>, data: &'a [u8]) -> TensorView<'a> {
    TensorView::new(dtype, shape, data).expect("shape matches the data")
}

impl Correspondences {
    pub fn len(&self) -> usize {
        self.view_i.len()
    }

    pub fn is_empty(&self) -> bool {
        self.view_i.is_empty()
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(CORRESPONDENCES_FILE);
        let m = self.len();
        if [
            self.view_j.len(),
            self.pixel_i.len(),
            self.pixel_j.len(),
            self.ape.len(),
        ]
        .iter()
        .any(|&n| n != m)
        {
            return Err(FormatError::invalid(
                &path,
                "correspondences",
                "columns differ in length",
            ));
        }
        let pixel_i: Vec<f32> = self.pixel_i.iter().flatten().copied().collect();
        let pixel_j: Vec<f32> = self.pixel_j.iter().flatten().copied().collect();
        write_views(
            &path,
            vec![
                ("view_i", view(Dtype::I64, vec![m], bytemuck::cast_slice(&self.view_i))),
                ("view_j", view(Dtype::I64, vec![m], bytemuck::cast_slice(&self.view_j))),
                ("pixel_i", view(Dtype::F32, vec![m, 2], bytemuck::cast_slice(&pixel_i))),
                ("pixel_j", view(Dtype::F32, vec![m, 2], bytemuck::cast_slice(&pixel_j))),
                ("ape", view(Dtype::F32, vec![m], bytemuck::cast_slice(&self.ape))),
            ],
            &HashMap::new(),
        )
    }

    /// Reads the shard and checks that every column has one entry per correspondence and every view index
    /// is below `views`.
    pub fn read(dir: &Path, views: usize) -> Result<Self> {
        let shard = ShardReader::open(&dir.join(CORRESPONDENCES_FILE))?;
        let pairs = |name: &str| -> Result<Vec<[f32; 2]>> {
            Ok(shard
                .values::<f32>(name)?
                .chunks_exact(2)
                .map(|c| [c[0], c[1]])
                .collect())
        };
        let read = Correspondences {
            view_i: shard.values::<i64>("view_i")?.to_vec(),
            view_j: shard.values::<i64>("view_j")?.to_vec(),
            pixel_i: pairs("pixel_i")?,
            pixel_j: pairs("pixel_j")?,
            ape: shard.values::<f32>("ape")?.to_vec(),
        };
        let m = read.len();
        let bad_length = [
            read.view_j.len(),
            read.pixel_i.len(),
            read.pixel_j.len(),
            read.ape.len(),
        ]
        .iter()
        .any(|&n| n != m);
        let bad_view = read
            .view_i
            .iter()
            .chain(&read.view_j)
            .any(|&v| !(0..views as i64).contains(&v));
        if bad_length || bad_view {
            return Err(FormatError::invalid(
                shard.path(),
                "correspondences",
                format!("columns differ in length or name a view outside 0..{views}"),
            ));
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_view_indices() {
        let dir = tempfile::tempdir().unwrap();
        let c = Correspondences {
            view_i: vec![0, 1],
            view_j: vec![1, 2],
            pixel_i: vec![[0.5, 1.5], [3.0, 4.0]],
            pixel_j: vec![[2.5, 0.5], [7.0, 1.0]],
            ape: vec![0.25, 1.5],
        };
        c.write(dir.path()).unwrap();
        assert_eq!(Correspondences::read(dir.path(), 3).unwrap(), c);
        let error = Correspondences::read(dir.path(), 2).unwrap_err().to_string();
        assert!(error.contains(CORRESPONDENCES_FILE), "{error}");
    }
}
