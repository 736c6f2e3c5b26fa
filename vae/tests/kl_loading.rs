//! Loading AutoencoderKL checkpoints: round trips, and bad files reported key by key.

mod support;

use lrf_vae::{Autoencoder, AutoencoderKL, KlConfig, Part, VaeError};
use tch::{Device, Kind, Tensor};

fn small_config() -> KlConfig {
    KlConfig {
        block_out_channels: vec![32, 32, 64, 64],
        latent_channels: 4,
        down_block_types: vec!["DownEncoderBlock2D".into(); 4],
        up_block_types: vec!["UpDecoderBlock2D".into(); 4],
        ..Default::default()
    }
}

#[test]
fn kl_save_then_open_reproduces_outputs() {
    tch::manual_seed(3);
    let model = AutoencoderKL::new(small_config(), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let reopened = AutoencoderKL::open(dir.path(), Device::Cpu).unwrap();
    assert_eq!(reopened.config(), model.config());
    let generic = lrf_vae::open_autoencoder(dir.path(), Device::Cpu).unwrap();
    assert_eq!(
        (generic.latent_channels(), generic.input_range()),
        (4, lrf_vae::InputRange::Symmetric)
    );
    let image = Tensor::rand([1, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let _guard = tch::no_grad_guard();
    let (a, b) = (model.encode(&image).unwrap(), reopened.encode(&image).unwrap());
    assert!(a.mean.equal(&b.mean));
    assert!(model.decode(&a.mean).unwrap().equal(&reopened.decode(&a.mean).unwrap()));
    let names = |part| model.vars(part).variables().into_keys().collect::<Vec<_>>();
    assert!(
        names(Part::Encoder)
            .iter()
            .all(|n| n.starts_with("encoder.") || n.starts_with("quant_conv."))
    );
    assert!(
        names(Part::Decoder)
            .iter()
            .all(|n| n.starts_with("decoder.") || n.starts_with("post_quant_conv."))
    );
    assert!(
        model
            .decoder_output_weight()
            .equal(&model.vars(Part::Decoder).variables()["decoder.conv_out.weight"])
    );
}

#[test]
fn kl_partial_checkpoint_lists_missing_unexpected_and_mismatched_keys_with_shapes() {
    let model = AutoencoderKL::new(small_config(), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let weights = dir.path().join("diffusion_pytorch_model.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&weights).unwrap();
    tensors.retain(|(k, _)| k != "decoder.conv_out.bias");
    for (k, t) in tensors.iter_mut() {
        if k == "encoder.conv_in.weight" {
            *t = Tensor::zeros([32, 3, 5, 5], (Kind::Float, Device::Cpu));
        }
    }
    tensors.push((
        "encoder.extra.weight".into(),
        Tensor::zeros([2, 7], (Kind::Float, Device::Cpu)),
    ));
    Tensor::write_safetensors(&tensors, &weights).unwrap();

    let err = AutoencoderKL::open(dir.path(), Device::Cpu)
        .err()
        .expect("a damaged checkpoint is refused");
    let message = err.to_string();
    println!("{message}");
    let VaeError::Keys { source_name, report } = err else {
        panic!("expected a key report, got {message}")
    };
    assert!(source_name.ends_with("diffusion_pytorch_model.safetensors"));
    assert_eq!(report.missing, vec![("decoder.conv_out.bias".to_string(), vec![3])]);
    assert_eq!(
        report.unexpected,
        vec![("encoder.extra.weight".to_string(), vec![2, 7])]
    );
    assert_eq!(
        report.mismatched,
        vec![(
            "encoder.conv_in.weight".to_string(),
            vec![32, 3, 5, 5],
            vec![32, 3, 3, 3]
        )]
    );
    assert!(message.contains("decoder.conv_out.bias [3]") && message.contains("encoder.extra.weight [2, 7]"));
}

#[test]
fn kl_non_autoencoder_file_and_bad_input_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    Tensor::write_safetensors(&[("weight", Tensor::zeros([2], (Kind::Float, Device::Cpu)))], &path).unwrap();
    let err = AutoencoderKL::open(&path, Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("other.safetensors") && err.contains("neither a diffusers"),
        "{err}"
    );
    let pickle = dir.path().join("lrf.ckpt");
    std::fs::write(&pickle, b"not read").unwrap();
    assert!(
        AutoencoderKL::open(&pickle, Device::Cpu)
            .err()
            .unwrap()
            .to_string()
            .contains("safetensors")
    );

    let model = AutoencoderKL::new(small_config(), Device::Cpu).unwrap();
    let odd = Tensor::zeros([1, 3, 30, 32], (Kind::Float, Device::Cpu));
    assert!(matches!(model.encode(&odd), Err(VaeError::Input { .. })));
    let wrong_latent = Tensor::zeros([1, 16, 4, 4], (Kind::Float, Device::Cpu));
    assert!(matches!(model.decode(&wrong_latent), Err(VaeError::Input { .. })));
}

#[test]
fn kl_legacy_diffusers_attention_names_load() {
    tch::manual_seed(4);
    let model = AutoencoderKL::new(small_config(), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let weights = dir.path().join("diffusion_pytorch_model.safetensors");
    let legacy: Vec<(String, Tensor)> = Tensor::read_safetensors(&weights)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let k = k
                .replace("to_q.", "query.")
                .replace("to_k.", "key.")
                .replace("to_v.", "value.");
            (k.replace("to_out.0.", "proj_attn."), t)
        })
        .collect();
    assert!(
        legacy
            .iter()
            .any(|(k, _)| k == "encoder.mid_block.attentions.0.proj_attn.weight")
    );
    Tensor::write_safetensors(&legacy, &weights).unwrap();
    let reopened = AutoencoderKL::open(dir.path(), Device::Cpu).unwrap();
    let latent = Tensor::randn([1, 4, 4, 4], (Kind::Float, Device::Cpu));
    let _guard = tch::no_grad_guard();
    assert!(model.decode(&latent).unwrap().equal(&reopened.decode(&latent).unwrap()));
}

/// A fine-tuned copy keeps what the original `config.json` says for other tools (SD3-style
/// `shift_factor`, `force_upcast`, …) though this model does not use it; diffusers' own bookkeeping
/// (`_diffusers_version`) is not copied, and `_class_name` names the model for `from_pretrained`.
#[test]
fn kl_save_keeps_config_fields_the_model_does_not_use() {
    let model = AutoencoderKL::new(small_config(), Device::Cpu).unwrap();
    let original = tempfile::tempdir().unwrap();
    model.save(original.path()).unwrap();
    let config_path = original.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["shift_factor"] = 0.0609.into();
    config["force_upcast"] = false.into();
    config["latents_mean"] = serde_json::Value::Null;
    config["_diffusers_version"] = "0.30.0".into();
    std::fs::write(&config_path, config.to_string()).unwrap();

    let copy = tempfile::tempdir().unwrap();
    AutoencoderKL::open(original.path(), Device::Cpu)
        .unwrap()
        .save_folder(copy.path())
        .unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["_class_name"], "AutoencoderKL");
    assert_eq!(saved["shift_factor"], 0.0609);
    assert_eq!(saved["force_upcast"], false);
    assert!(saved["latents_mean"].is_null() && saved.get("latents_mean").is_some());
    assert!(saved.get("_diffusers_version").is_none());
    assert_eq!(saved["latent_channels"], 4);
    assert_eq!(
        AutoencoderKL::open(copy.path(), Device::Cpu).unwrap().config(),
        model.config()
    );
}

#[test]
fn kl_unsupported_block_type_is_refused_by_name() {
    let mut config = small_config();
    config.down_block_types[1] = "CrossAttnDownBlock2D".into();
    let err = AutoencoderKL::new(config, Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("CrossAttnDownBlock2D") && err.contains("AttnDownEncoderBlock2D"),
        "{err}"
    );
}

/// diffusers' decoder: `conv_in` and the mid block at the latent's resolution, each up block at its input's,
/// its upsampler's convolution at twice that, the output layers at the image's.
#[test]
fn kl_decoder_scales_follow_the_up_blocks() {
    let model = AutoencoderKL::new(small_config(), Device::Cpu).unwrap();
    for (name, scale) in [
        ("post_quant_conv.weight", 1),
        ("decoder.conv_in.weight", 1),
        ("decoder.mid_block.resnets.0.conv1.weight", 1),
        ("decoder.up_blocks.0.resnets.2.conv2.bias", 1),
        ("decoder.up_blocks.0.upsamplers.0.conv.weight", 2),
        ("decoder.up_blocks.2.resnets.0.conv1.weight", 4),
        ("decoder.up_blocks.2.upsamplers.0.conv.weight", 8),
        ("decoder.up_blocks.3.resnets.0.conv1.weight", 8),
        ("decoder.conv_norm_out.weight", 8),
        ("decoder.conv_out.bias", 8),
    ] {
        assert_eq!(model.decoder_scale(name), Some(scale), "{name}");
    }
    for unknown in [
        "decoder.up_blocks.4.resnets.0.conv1.weight",
        "encoder.conv_in.weight",
        "conv_out.weight",
    ] {
        assert_eq!(model.decoder_scale(unknown), None, "{unknown}");
    }
    assert_eq!(support::decoder_scales(&model), [1, 2, 4, 8]);
}
