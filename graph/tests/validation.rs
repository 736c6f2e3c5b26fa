//! Pipeline files with mistakes: each error names file, line, column and stage, and says how to fix it.

use std::path::Path;

use lrf_graph::testing::{Counter, registry};
use lrf_graph::{Pipeline, SpecErrors};

const HEAD: &str = "pipeline: v\nscenes:\n  - {glob: \"scenes/*\", role: train}\nstages:\n";

fn errors(stages: &str) -> SpecErrors {
    let text = format!("{HEAD}{stages}");
    let spec = match lrf_graph::spec::PipelineSpec::parse(&text, Path::new("p.yaml")) {
        Ok(spec) => spec,
        Err(errors) => return errors,
    };
    match Pipeline::validate(spec, Path::new("p.yaml"), &registry(&Counter::new())) {
        Ok(_) => panic!("expected validation errors for:\n{text}"),
        Err(errors) => errors,
    }
}

fn one(stages: &str) -> String {
    let errors = errors(stages);
    assert_eq!(errors.0.len(), 1, "{errors}");
    errors.0[0].to_string()
}

#[test]
fn a_valid_pipeline_orders_stages_by_their_inputs() {
    let text = format!(
        "{HEAD}  - {{id: b, kind: test-map, inputs: {{data: a}}}}\n  - {{id: a, kind: test-source, inputs: {{scene: scenes}}}}\n"
    );
    let spec = lrf_graph::spec::PipelineSpec::parse(&text, Path::new("p.yaml")).expect("parses");
    let pipeline = Pipeline::validate(spec, Path::new("dir/p.yaml"), &registry(&Counter::new())).expect("valid");
    let ids: Vec<_> = pipeline.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(pipeline.work_dir, Path::new("dir/work/v"));
    let spec = lrf_graph::spec::PipelineSpec::parse(
        &text.replace("pipeline: v", "pipeline: v\nwork_dir: ../w"),
        Path::new("p.yaml"),
    )
    .expect("parses");
    let pipeline = Pipeline::validate(spec, Path::new("dir/p.yaml"), &registry(&Counter::new())).expect("valid");
    assert_eq!(pipeline.work_dir, Path::new("w"), "paths are tidied");
}

#[test]
fn unknown_key_in_a_stage_names_line_column_and_stage() {
    let message = one(
        "  - id: a\n    kind: test-source\n    inputs: {scene: scenes}\n  - id: b\n    kind: test-map\n    input: {data: a}\n",
    );
    assert!(message.starts_with("p.yaml:10:5: "), "{message}");
    assert!(message.contains("stage `b`"), "{message}");
    assert!(
        message.ends_with("unknown field `input`, expected one of id, kind, inputs, params, roles, pin"),
        "{message}"
    );
}

#[test]
fn unknown_top_level_key_is_an_error() {
    let errors = errors("  - {id: a, kind: test-source, inputs: {scene: scenes}}\nworkres: 3\n");
    assert!(errors.to_string().contains("unknown field `workres`"), "{errors}");
}

#[test]
fn unknown_kind_lists_the_known_kinds() {
    let message = one("  - id: a\n    kind: test-sourse\n");
    assert!(message.starts_with("p.yaml:6:11: stage `a`:"), "{message}");
    assert!(
        message.contains("unknown stage kind `test-sourse`; known kinds: exec, test-apply, test-map"),
        "{message}"
    );
}

#[test]
fn missing_input_says_which_port_and_type() {
    let message = one("  - id: a\n    kind: test-map\n");
    assert!(
        message.starts_with("p.yaml:5:5: stage `a`: missing input `data` (type `blob`)"),
        "{message}"
    );
}

#[test]
fn mistyped_input_names_both_types() {
    let message = one(
        "  - {id: a, kind: test-source, inputs: {scene: scenes}}\n  - {id: r, kind: test-reduce, inputs: {items: a}}\n  - {id: b, kind: test-map, inputs: {data: r}}\n",
    );
    assert!(
        message.contains("stage `b`: input `data` takes type `blob` but `r` is of type `model`"),
        "{message}"
    );
    assert!(message.starts_with("p.yaml:7:"), "{message}");
}

#[test]
fn unknown_port_and_unknown_stage_are_reported_together() {
    let errors = errors(
        "  - {id: a, kind: test-source, inputs: {scene: scenes, colour: scenes}}\n  - {id: b, kind: test-map, inputs: {data: nope}}\n",
    );
    let text = errors.to_string();
    assert!(
        text.contains("unknown input port `colour`; kind `test-source` takes `scene` (scene)"),
        "{text}"
    );
    assert!(
        text.contains("input `data` names unknown stage `nope`; stages: scenes, a, b"),
        "{text}"
    );
}

#[test]
fn a_cycle_is_named() {
    let message = one(
        "  - {id: a, kind: test-map, inputs: {data: c}}\n  - {id: b, kind: test-map, inputs: {data: a}}\n  - {id: c, kind: test-map, inputs: {data: b}}\n",
    );
    assert!(message.contains("cycle: a → b → c → a"), "{message}");
}

#[test]
fn a_parameter_out_of_range_states_the_range() {
    let message = one("  - id: a\n    kind: test-source\n    inputs: {scene: scenes}\n    params: {sleep_ms: 99999}\n");
    assert!(
        message.starts_with("p.yaml:8:13: stage `a`: invalid params"),
        "{message}"
    );
    assert!(message.contains("out of range 0..=10000"), "{message}");
}

#[test]
fn a_misspelt_parameter_is_rejected() {
    let message = one("  - id: a\n    kind: test-source\n    inputs: {scene: scenes}\n    params: {slat: 1}\n");
    assert!(message.contains("unknown field `slat`"), "{message}");
}

#[test]
fn duplicate_ids_roles_and_pins_are_checked() {
    let errors = errors(
        "  - {id: a, kind: test-source, inputs: {scene: scenes}, roles: [evl]}\n  - {id: a, kind: test-source, inputs: {scene: scenes}}\n  - {id: b, kind: test-map, inputs: {data: a}, pin: abcdef12}\n",
    );
    let text = errors.to_string();
    assert!(text.contains("stage `a`: duplicate stage id"), "{text}");
    assert!(text.contains("no scene source has role `evl`; roles: train"), "{text}");
    assert!(text.contains("only global stages can be pinned"), "{text}");
}

#[test]
fn a_narrower_producer_is_caught() {
    let text = "pipeline: v\nscenes:\n  - {glob: \"a/*\", role: train}\n  - {glob: \"b/*\", role: eval}\nstages:\n  - {id: a, kind: test-source, inputs: {scene: scenes}, roles: [train]}\n  - {id: b, kind: test-map, inputs: {data: a}}\n";
    let spec = lrf_graph::spec::PipelineSpec::parse(text, Path::new("p.yaml")).expect("parses");
    let errors = Pipeline::validate(spec, Path::new("p.yaml"), &registry(&Counter::new()))
        .err()
        .expect("invalid");
    assert!(
        errors
            .to_string()
            .contains("input `a` has none for eval; restrict it with `roles:`"),
        "{errors}"
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let errors = errors("  - {id: a, kind: [unclosed\n");
    assert!(errors.0[0].line > 0, "{errors}");
}

#[test]
fn a_stage_id_that_inputs_could_not_name_is_rejected() {
    let message = one("  - {id: t2.5e-5, kind: test-source, inputs: {scene: scenes}}\n");
    assert!(
        message.contains("stage id \"t2.5e-5\" must be letters, digits"),
        "{message}"
    );
}

#[test]
fn an_invalid_stage_is_reported_once_not_again_by_the_stages_reading_it() {
    let errors = errors(
        "  - {id: a, kind: test-sourse, inputs: {scene: scenes}}\n  - {id: b, kind: test-map, inputs: {data: a}}\n",
    );
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert!(
        errors.to_string().contains("unknown stage kind `test-sourse`"),
        "{errors}"
    );
}

#[test]
fn a_duplicate_key_says_how_to_fix_the_file() {
    let text = "pipeline: v\npipeline: w\nscenes: []\nstages: []\n";
    let errors = lrf_graph::spec::PipelineSpec::parse(text, Path::new("p.yaml"))
        .err()
        .expect("duplicate key");
    let message = errors.to_string();
    assert!(
        message.contains("p.yaml:2:1: duplicate mapping key: pipeline"),
        "{message}"
    );
    assert!(message.contains("each key may appear once"), "{message}");
    assert!(!message.contains("DuplicateKeyPolicy"), "{message}");
}
