//! `graphdeco-export`: an RGB field as the model folder graphdeco's 3D Gaussian Splatting writes, which its
//! `render.py`, SIBR's viewer and the tools built on that layout open:
//!
//! ```text
//! model/
//!   cfg_args                                  the training arguments, as Python's `Namespace` repr
//!   cameras.json                              every view: img_name, width, height, position, rotation, fx, fy
//!   point_cloud/iteration_<N>/point_cloud.ply the field (3DGS layout), N its iterations
//! ```
//!
//! `cameras.json` follows graphdeco's `camera_to_JSON`: `position` is the camera centre and `rotation` the
//! camera-to-world rotation as three rows; test views come first, then training views. graphdeco's
//! cameras have a centred principal point, so a view whose ingest crop moved it is off by that shift
//! there. Latent fields are refused: these readers show three colour channels (a latent field's own
//! `point_cloud.ply` describes itself in its header comments).

use std::fmt::Write as _;

use anyhow::{Context, bail};
use lrf_formats::ply::{SH_COEFFS, read_ply};
use lrf_formats::scene::Split;
use lrf_formats::views::ViewSet;
use lrf_graph::{Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};

use crate::artifacts::{FIELD_INFO, FieldInfo, FieldSpace, PLY_FILE, input_dir, output_dir, read_json};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphdecoExport {}

/// The port type of an exported model folder.
pub const GRAPHDECO_MODEL_TYPE: &str = "graphdeco-model";

impl StageKind for GraphdecoExport {
    const KIND: &'static str = "graphdeco-export";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: vec![
                Port::new("field", "field"),
                Port::new("views", "views"),
                Port::new("scene", lrf_graph::stage::SCENE_TYPE),
            ],
            outputs: vec![Port::new("model", GRAPHDECO_MODEL_TYPE)],
        }
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let field_dir = input_dir(job, "field")?;
        let info: FieldInfo = read_json(&field_dir.join(FIELD_INFO))?;
        if !info.representation.is_gaussians() {
            bail!(
                "graphdeco-export writes 3D Gaussian models; the field in {} is a {}",
                field_dir.display(),
                info.representation.name()
            );
        }
        if let FieldSpace::Latent { .. } = info.space {
            bail!(
                "graphdeco-export takes RGB fields (rgb-3dgs-fit); this is a latent field, which 3DGS viewers \
                 cannot show: its point_cloud.ply ({}) names its autoencoder and normalisation in its header",
                field_dir.join(PLY_FILE).display()
            );
        }
        let ply = read_ply(&field_dir.join(PLY_FILE))?;
        if ply.channels != 3 {
            bail!(
                "graphdeco-export: the field has {} channels; 3DGS models have 3",
                ply.channels
            );
        }
        let sh_degree = SH_COEFFS
            .iter()
            .position(|&k| k == ply.sh_coeffs)
            .context("the field's SH coefficient count is not that of degree 0-3")?;
        let views = ViewSet::read(input_dir(job, "views")?)?;
        let source = std::fs::canonicalize(input_dir(job, "scene")?)?;
        let out = output_dir(job, "model")?;
        let cloud = out.join("point_cloud").join(format!("iteration_{}", info.iterations));
        std::fs::create_dir_all(&cloud)?;
        std::fs::copy(field_dir.join(PLY_FILE), cloud.join(PLY_FILE))?;
        let cfg_args = format!(
            "Namespace(data_device='cuda', eval=True, images={images}, model_path={model}, resolution=-1, \
             sh_degree={sh_degree}, source_path={source}, white_background=False)",
            images = python_string(&views.images),
            model = python_string(&out.to_string_lossy()),
            source = python_string(&source.to_string_lossy()),
        );
        lrf_formats::atomic::write_atomic(&out.join("cfg_args"), cfg_args.as_bytes())?;
        let mut cameras = Vec::new();
        for split in [Split::Test, Split::Train] {
            for view in views.views.iter().filter(|v| v.split == split) {
                let camera = &view.camera;
                // Rows of the camera-to-world rotation are the columns of the world-to-camera one.
                let to_world = camera.rotation.transpose();
                let rows: Vec<[f64; 3]> = (0..3).map(|r| to_world.row(r).to_array()).collect();
                let name = std::path::Path::new(&view.name).with_extension("");
                cameras.push(serde_json::json!({
                    "id": cameras.len(),
                    "img_name": name.to_string_lossy(),
                    "width": camera.width,
                    "height": camera.height,
                    "position": camera.center().to_array(),
                    "rotation": rows,
                    "fy": camera.fy,
                    "fx": camera.fx,
                }));
            }
        }
        crate::artifacts::write_json(&out.join("cameras.json"), &cameras)
    }
}

/// A Python string literal (single-quoted, as `repr` writes one).
fn python_string(text: &str) -> String {
    let mut literal = String::from("'");
    for c in text.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '\'' => literal.push_str("\\'"),
            c if (c as u32) < 0x20 => {
                let _ = write!(literal, "\\x{:02x}", c as u32);
            }
            c => literal.push(c),
        }
    }
    literal.push('\'');
    literal
}

#[cfg(test)]
mod tests {
    #[test]
    fn python_strings_escape_quotes_and_backslashes() {
        assert_eq!(super::python_string(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(super::python_string("x\ny"), r"'x\x0ay'");
    }
}
