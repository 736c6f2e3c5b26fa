//! The pipeline loader on arbitrary text: parsing and validation (against the test stage kinds and the
//! built-in `exec`) never panic; every error names the file with a line; a pipeline that validates has
//! its stages in an order where each input comes first.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lrf_graph::pipeline::Source;
use lrf_graph::spec::PipelineSpec;
use lrf_graph::testing::{Counter, registry};
use lrf_graph::Pipeline;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let file = Path::new("fuzz/p.yaml");
    let spec = match PipelineSpec::parse(&text, file) {
        Ok(spec) => spec,
        Err(errors) => {
            assert!(!errors.0.is_empty());
            assert!(errors.to_string().contains("fuzz/p.yaml"), "{errors}");
            return;
        }
    };
    match Pipeline::validate(spec, file, &registry(&Counter::new())) {
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for error in &errors.0 {
                assert!(error.to_string().starts_with("fuzz/p.yaml:"), "{error}");
            }
        }
        Ok(pipeline) => {
            for (index, node) in pipeline.stages.iter().enumerate() {
                for binding in &node.inputs {
                    if let Source::Stage { stage, .. } = binding.source {
                        assert!(stage < index, "stage {} reads stage {stage}, which comes later", node.id);
                    }
                }
            }
        }
    }
});
