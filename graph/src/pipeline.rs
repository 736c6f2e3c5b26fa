//! Validation: a parsed pipeline file becomes a `Pipeline`, a DAG of configured stages in
//! topological order, or a list of every problem found, each with its position.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::{Location, Spanned};

use crate::error::{SpecError, SpecErrors};
use crate::key::{KeyHasher, canonical_json};
use crate::registry::{Generator, Registry};
use crate::spec::{PipelineSpec, SceneSource, StageSpec, position};
use crate::stage::{SCENE_TYPE, Scope, Signature, Stage};

/// A validated pipeline: stages in an order where every input comes before its consumer.
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    pub work_dir: PathBuf,
    pub workers: Option<usize>,
    /// Where the scenes come from, in file order.
    pub sources: Vec<SourceNode>,
    pub stages: Vec<StageNode>,
}

/// One scene source: where some scene folders come from, all with one role.
#[derive(Clone)]
pub struct SourceNode {
    pub role: String,
    pub origin: Origin,
    /// Whether matching no scene folder is fine (`allow_empty`); an error otherwise.
    pub allow_empty: bool,
}

#[derive(Clone)]
pub enum Origin {
    /// Folders matching this glob pattern (the pipeline file's folder joined, tidied).
    Glob(String),
    /// Folders a registered generator writes; see `scenes::collect`.
    Generate(GenerateSource),
}

/// A `generate:` source, validated: its scenes are the subfolders of `dir`, generated when
/// `dir` is missing.
#[derive(Clone)]
pub struct GenerateSource {
    pub generator: Generator,
    /// Canonical parameters, as the generator's check returned them.
    pub params: serde_json::Value,
    /// `<work_dir>/scenes/<generator>-<hash>`, the hash over the generator's name, version and
    /// canonical parameters: the same source always names the same folder.
    pub dir: PathBuf,
    /// `file:line:column` of the source, for errors.
    pub at: String,
}

impl SourceNode {
    /// How the source reads in messages: `glob ...` or `generate: NAME`.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Glob(pattern) => format!("glob {pattern:?}"),
            Origin::Generate(g) => format!("generate: {}", g.generator.name),
        }
    }
}

/// The folder a generator's scenes go to under `work_dir`: the same name, version and
/// parameters always give the same folder, any change gives another.
pub fn generated_dir(work_dir: &Path, generator: &Generator, params: &serde_json::Value) -> PathBuf {
    let key = KeyHasher::new("lrf-scene-generator")
        .field(generator.name.as_bytes())
        .field(&generator.version.to_le_bytes())
        .field(canonical_json(params).as_bytes())
        .finish();
    work_dir
        .join("scenes")
        .join(format!("{}-{}", generator.name, &key.hex()[..12]))
}

/// One configured stage in the graph.
pub struct StageNode {
    pub id: String,
    pub stage: Arc<dyn Stage>,
    pub signature: Signature,
    /// The stage's canonical parameters, as every key and manifest holds them.
    pub params: serde_json::Value,
    /// Scene roles it runs on (per-scene) or collects (global).
    pub roles: BTreeSet<String>,
    /// One binding per input port, in the signature's order.
    pub inputs: Vec<Binding>,
    pub pin: Option<String>,
}

/// Where an input port reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The scene folders themselves.
    Scenes,
    /// An output port of an earlier stage (its index in `Pipeline::stages`).
    Stage { stage: usize, port: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub port: String,
    pub source: Source,
}

impl StageNode {
    pub fn scope(&self) -> Scope {
        self.signature.scope
    }
}

impl Pipeline {
    /// Reads, parses and validates a pipeline file against the registry's stage kinds.
    pub fn load(file: &Path, registry: &Registry) -> Result<Self, SpecErrors> {
        let spec = PipelineSpec::read(file)?;
        Self::validate(spec, file, registry)
    }

    /// Validates a parsed pipeline; `file` locates relative paths and names errors.
    pub fn validate(spec: PipelineSpec, file: &Path, registry: &Registry) -> Result<Self, SpecErrors> {
        Validator {
            file,
            errors: Vec::new(),
        }
        .run(spec, registry)
    }

    /// The stage with this id.
    pub fn stage_index(&self, id: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.id == id)
    }
}

struct Validator<'a> {
    file: &'a Path,
    errors: Vec<SpecError>,
}

/// A stage that built, before its inputs are resolved.
struct Built {
    spec: StageSpec,
    at: Location,
    stage: Arc<dyn Stage>,
    signature: Signature,
    params: serde_json::Value,
}

impl Validator<'_> {
    fn error(&mut self, at: &Location, stage: Option<&str>, message: String) {
        let (line, column) = position(at);
        self.errors.push(SpecError {
            file: self.file.to_owned(),
            line,
            column,
            stage: stage.map(str::to_owned),
            message,
        });
    }

    fn run(mut self, spec: PipelineSpec, registry: &Registry) -> Result<Pipeline, SpecErrors> {
        let base_dir = self.file.parent().map(Path::to_owned).unwrap_or_default();
        let base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir
        };
        let all_roles: BTreeSet<String> = spec.scenes.iter().map(|s| s.value.role.clone()).collect();
        let work_dir = spec
            .work_dir
            .clone()
            .unwrap_or_else(|| format!("work/{}", spec.pipeline));
        let work_dir = tidy(&base_dir.join(work_dir));
        let sources = spec
            .scenes
            .iter()
            .filter_map(|s| self.source(&s.value, &s.referenced, registry, &base_dir, &work_dir))
            .collect();
        let mut seen = BTreeSet::new();
        let mut built = Vec::new();
        for Spanned {
            value: stage,
            referenced: at,
            ..
        } in spec.stages
        {
            if !seen.insert(stage.id.value.clone()) {
                self.error(&stage.id.referenced, Some(&stage.id.value), "duplicate stage id".into());
                continue;
            }
            // Inputs name `stage.port`, so an id with a dot could never be referenced.
            let id = &stage.id.value;
            if id.is_empty() || id == "scenes" || !id.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_') {
                let message = format!("stage id {id:?} must be letters, digits, `-` or `_` (and not `scenes`)");
                self.error(&stage.id.referenced, Some(id), message);
                continue;
            }
            if let Some(b) = self.build(stage, at, registry, &base_dir) {
                built.push(b);
            }
        }
        let ids: BTreeMap<String, usize> = built
            .iter()
            .enumerate()
            .map(|(i, b)| (b.spec.id.value.clone(), i))
            .collect();
        let mut nodes = Vec::new();
        for b in &built {
            nodes.push(self.resolve(b, &built, &ids, &seen, &all_roles));
        }
        let order = self.order(&built, &nodes);
        if !self.errors.is_empty() {
            return Err(SpecErrors(self.errors));
        }
        // Renumber stage references from file order to topological order.
        let rank: BTreeMap<usize, usize> = order.iter().enumerate().map(|(new, &old)| (old, new)).collect();
        let mut slots: Vec<Option<(Built, StageNode)>> = built.into_iter().zip(nodes).map(Some).collect();
        let stages = order
            .iter()
            .map(|&old| {
                let (_, mut node) = slots[old].take().expect("each stage once in the order");
                for binding in &mut node.inputs {
                    if let Source::Stage { stage, .. } = &mut binding.source {
                        *stage = rank[stage];
                    }
                }
                node
            })
            .collect();
        Ok(Pipeline {
            name: spec.pipeline,
            file: self.file.to_owned(),
            work_dir,
            workers: spec.workers,
            sources,
            stages,
        })
    }

    /// Checks one scene source: exactly one of glob and generate, a known generator, valid params.
    fn source(
        &mut self,
        source: &SceneSource,
        at: &Location,
        registry: &Registry,
        base_dir: &Path,
        work_dir: &Path,
    ) -> Option<SourceNode> {
        let role = source.role.clone();
        match (&source.glob, &source.generate) {
            (Some(_), Some(_)) | (None, None) => {
                let message = "a scene source takes either `glob:` (scene folders) or `generate:` (a scene \
                               generator), not both or neither";
                self.error(at, None, message.into());
                None
            }
            (Some(glob), None) => {
                if let Some(params) = &source.params {
                    let message = "`params:` goes with `generate:`; a `glob:` source has none";
                    self.error(&params.referenced, None, message.into());
                    return None;
                }
                let pattern = tidy(&base_dir.join(&glob.value)).to_string_lossy().into_owned();
                Some(SourceNode {
                    role,
                    origin: Origin::Glob(pattern),
                    allow_empty: source.allow_empty,
                })
            }
            (None, Some(name)) => {
                let Some(generator) = registry.generator(&name.value) else {
                    let known = registry.generators();
                    let known = if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    };
                    let message = format!("unknown scene generator `{}`; known generators: {known}", name.value);
                    self.error(&name.referenced, None, message);
                    return None;
                };
                let params = source
                    .params
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or(serde_json::json!({}));
                let params = match generator.check(params) {
                    Ok(params) => params,
                    Err(message) => {
                        let params_at = source.params.as_ref().map(|p| &p.referenced).unwrap_or(at);
                        let message = format!("invalid params for scene generator `{}`: {message}", name.value);
                        self.error(params_at, None, message);
                        return None;
                    }
                };
                let (line, column) = position(at);
                if source.allow_empty {
                    let message = "`allow_empty:` goes with `glob:`; a generator must write scenes";
                    self.error(at, None, message.into());
                    return None;
                }
                Some(SourceNode {
                    role,
                    allow_empty: false,
                    origin: Origin::Generate(GenerateSource {
                        dir: generated_dir(work_dir, generator, &params),
                        generator: generator.clone(),
                        params,
                        at: format!("{}:{line}:{column}", self.file.display()),
                    }),
                })
            }
        }
    }

    fn build(&mut self, spec: StageSpec, at: Location, registry: &Registry, base_dir: &Path) -> Option<Built> {
        let id = spec.id.value.clone();
        let params = spec
            .params
            .as_ref()
            .map(|p| p.value.clone())
            .unwrap_or(serde_json::json!({}));
        let params_at = spec.params.as_ref().map(|p| p.referenced).unwrap_or(at);
        match registry.build(&spec.kind.value, params, base_dir) {
            None => {
                let known = registry.kinds().join(", ");
                let message = format!("unknown stage kind `{}`; known kinds: {known}", spec.kind.value);
                self.error(&spec.kind.referenced, Some(&id), message);
                None
            }
            Some(Err(message)) => {
                self.error(
                    &params_at,
                    Some(&id),
                    format!("invalid params for kind `{}`: {message}", spec.kind.value),
                );
                None
            }
            Some(Ok(stage)) => match stage.params() {
                Ok(params) => Some(Built {
                    signature: stage.signature(),
                    spec,
                    at,
                    stage,
                    params,
                }),
                Err(message) => {
                    self.error(&params_at, Some(&id), message);
                    None
                }
            },
        }
    }

    /// Binds each input port to its source, checking names, types, scopes and roles. `declared` holds every
    /// stage id of the file, `ids` those that built.
    fn resolve(
        &mut self,
        b: &Built,
        built: &[Built],
        ids: &BTreeMap<String, usize>,
        declared: &BTreeSet<String>,
        all_roles: &BTreeSet<String>,
    ) -> StageNode {
        let id = b.spec.id.value.as_str();
        let roles = match &b.spec.roles {
            None => all_roles.clone(),
            Some(r) => {
                for role in r.value.iter().filter(|role| !all_roles.contains(*role)) {
                    let known = all_roles.iter().cloned().collect::<Vec<_>>().join(", ");
                    self.error(
                        &r.referenced,
                        Some(id),
                        format!("no scene source has role `{role}`; roles: {known}"),
                    );
                }
                r.value.iter().cloned().collect()
            }
        };
        let ports = &b.signature.inputs;
        for (name, reference) in &b.spec.inputs {
            if !ports.iter().any(|p| &p.name == name) {
                let takes = describe_ports(ports);
                self.error(
                    &reference.referenced,
                    Some(id),
                    format!("unknown input port `{name}`; kind `{}` takes {takes}", b.stage.kind()),
                );
            }
        }
        let mut inputs = Vec::new();
        for port in ports {
            let Some(reference) = b.spec.inputs.get(&port.name) else {
                let message = format!(
                    "missing input `{}` (type `{}`); add `inputs: {{{}: ...}}`",
                    port.name, port.ty, port.name
                );
                self.error(&b.at, Some(id), message);
                continue;
            };
            let at = &reference.referenced;
            let text = reference.value.as_str();
            let (source, ty, producer) = if text == "scenes" {
                (Source::Scenes, SCENE_TYPE.to_owned(), None)
            } else {
                let (upstream, out_port) = match text.split_once('.') {
                    Some((s, p)) => (s, Some(p)),
                    None => (text, None),
                };
                let Some(&index) = ids.get(upstream) else {
                    // A stage that is declared but invalid has its own error already.
                    if declared.contains(upstream) {
                        continue;
                    }
                    let known = declared.iter().cloned().collect::<Vec<_>>().join(", ");
                    self.error(
                        at,
                        Some(id),
                        format!(
                            "input `{}` names unknown stage `{upstream}`; stages: scenes, {known}",
                            port.name
                        ),
                    );
                    continue;
                };
                let outputs = &built[index].signature.outputs;
                let output = match out_port {
                    Some(p) => outputs.iter().find(|o| o.name == p),
                    None if outputs.len() == 1 => outputs.first(),
                    None => {
                        let message = format!(
                            "stage `{upstream}` has several outputs; write `{upstream}.PORT` with PORT one of {}",
                            describe_ports(outputs)
                        );
                        self.error(at, Some(id), message);
                        continue;
                    }
                };
                let Some(output) = output else {
                    let message = format!(
                        "stage `{upstream}` has no output `{}`; it makes {}",
                        out_port.unwrap_or(""),
                        describe_ports(outputs)
                    );
                    self.error(at, Some(id), message);
                    continue;
                };
                (
                    Source::Stage {
                        stage: index,
                        port: output.name.clone(),
                    },
                    output.ty.clone(),
                    Some(index),
                )
            };
            if ty != port.ty {
                let message = format!(
                    "input `{}` takes type `{}` but `{text}` is of type `{ty}`",
                    port.name, port.ty
                );
                self.error(at, Some(id), message);
            }
            if let Some(index) = producer {
                self.check_roles(b, &roles, &built[index], all_roles, at);
            }
            inputs.push(Binding {
                port: port.name.clone(),
                source,
            });
        }
        let pin = b.spec.pin.as_ref().map(|p| p.value.clone());
        if let (Some(p), Scope::PerScene) = (&b.spec.pin, b.signature.scope) {
            self.error(&p.referenced, Some(id), "only global stages can be pinned".into());
        }
        StageNode {
            id: id.to_owned(),
            stage: b.stage.clone(),
            signature: b.signature.clone(),
            params: b.params.clone(),
            roles,
            inputs,
            pin,
        }
    }

    /// A per-scene consumer of a per-scene producer needs every one of its scenes produced.
    fn check_roles(
        &mut self,
        b: &Built,
        roles: &BTreeSet<String>,
        producer: &Built,
        all: &BTreeSet<String>,
        at: &Location,
    ) {
        if b.signature.scope != Scope::PerScene || producer.signature.scope != Scope::PerScene {
            return;
        }
        let produced: BTreeSet<String> = producer
            .spec
            .roles
            .as_ref()
            .map(|r| r.value.iter().cloned().collect())
            .unwrap_or_else(|| all.clone());
        let missing: Vec<_> = roles.difference(&produced).cloned().collect();
        if !missing.is_empty() {
            let message = format!(
                "runs on roles {} but its input `{}` has none for {}; restrict it with `roles:`",
                join(roles),
                producer.spec.id.value,
                missing.join(", ")
            );
            self.error(at, Some(&b.spec.id.value), message);
        }
    }

    /// Topological order of the built stages; reports each cycle by name.
    fn order(&mut self, built: &[Built], nodes: &[StageNode]) -> Vec<usize> {
        let deps: Vec<BTreeSet<usize>> = nodes
            .iter()
            .map(|n| {
                n.inputs
                    .iter()
                    .filter_map(|b| match b.source {
                        Source::Stage { stage, .. } => Some(stage),
                        Source::Scenes => None,
                    })
                    .collect()
            })
            .collect();
        let mut order = Vec::new();
        let mut placed = vec![false; nodes.len()];
        while order.len() < nodes.len() {
            let ready: Vec<usize> = (0..nodes.len())
                .filter(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]))
                .collect();
            if ready.is_empty() {
                let cycle = find_cycle(&deps, &placed);
                let names: Vec<&str> = cycle.iter().map(|&i| nodes[i].id.as_str()).collect();
                let first = cycle[0];
                self.error(
                    &built[first].at,
                    Some(&nodes[first].id),
                    format!("cycle: {} → {}", names.join(" → "), names[0]),
                );
                break;
            }
            for i in ready {
                placed[i] = true;
                order.push(i);
            }
        }
        order
    }
}

/// Follows unplaced dependencies until a stage repeats; returns the cycle in data-flow order,
/// starting from the stage written first.
fn find_cycle(deps: &[BTreeSet<usize>], placed: &[bool]) -> Vec<usize> {
    let start = (0..deps.len()).find(|&i| !placed[i]).unwrap_or(0);
    let mut path = vec![start];
    loop {
        let last = *path.last().expect("path starts non-empty");
        let Some(&next) = deps[last].iter().find(|&&d| !placed[d]) else {
            return path;
        };
        if let Some(at) = path.iter().position(|&p| p == next) {
            let mut cycle = path.split_off(at);
            cycle.reverse();
            let first = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| **s)
                .map(|(i, _)| i)
                .unwrap_or(0);
            cycle.rotate_left(first);
            return cycle;
        }
        path.push(next);
    }
}

/// `a/b/../c` → `a/c`, lexically, so paths in messages read as written.
fn tidy(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

fn describe_ports(ports: &[crate::stage::Port]) -> String {
    if ports.is_empty() {
        return "nothing".into();
    }
    ports
        .iter()
        .map(|p| format!("`{}` ({})", p.name, p.ty))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A registry with one test kind and the generator `pair`, which takes `{text}` only.
    fn registry() -> Registry {
        let mut registry = crate::testing::registry(&crate::testing::Counter::new());
        registry.register_generator(
            "pair",
            1,
            |params| match params.as_object() {
                Some(map) if map.keys().all(|k| k == "text") => {
                    Ok(json!({"text": map.get("text").cloned().unwrap_or(json!("hi"))}))
                }
                _ => Err(format!("expected {{text}}, got {params}")),
            },
            |_, _| Ok(()),
        );
        registry
    }

    fn validate(scenes: &str) -> Result<Pipeline, SpecErrors> {
        let text = format!(
            "pipeline: p\nscenes:\n{scenes}stages:\n  - {{id: a, kind: test-source, inputs: {{scene: scenes}}}}\n"
        );
        let spec = PipelineSpec::parse(&text, Path::new("dir/p.yaml"))?;
        Pipeline::validate(spec, Path::new("dir/p.yaml"), &registry())
    }

    fn error(scenes: &str) -> String {
        match validate(scenes) {
            Ok(_) => panic!("expected an error for\n{scenes}"),
            Err(errors) => {
                assert_eq!(errors.0.len(), 1, "{errors}");
                errors.0[0].to_string()
            }
        }
    }

    #[test]
    fn scene_sources_are_globs_or_generators() {
        let pipeline = validate(
            "  - {glob: \"scenes/*\", role: eval}\n  - generate: pair\n    params: {text: yo}\n    role: train\n  - {generate: pair, role: train}\n",
        )
        .expect("valid");
        let roles: Vec<_> = pipeline.sources.iter().map(|s| s.role.as_str()).collect();
        assert_eq!(roles, ["eval", "train", "train"]);
        let Origin::Glob(pattern) = &pipeline.sources[0].origin else {
            panic!("a glob source")
        };
        assert_eq!(pattern, "dir/scenes/*");
        let generated: Vec<&GenerateSource> = pipeline.sources[1..]
            .iter()
            .map(|s| match &s.origin {
                Origin::Generate(g) => g,
                Origin::Glob(_) => panic!("a generate source"),
            })
            .collect();
        assert_eq!(generated[0].params, json!({"text": "yo"}));
        assert_eq!(generated[1].params, json!({"text": "hi"}), "the generator's defaults");
        assert_eq!(generated[0].at, "dir/p.yaml:4:5");
        for g in &generated {
            assert_eq!(g.dir.parent(), Some(Path::new("dir/work/p/scenes")));
            let name = g.dir.file_name().unwrap().to_string_lossy();
            assert!(name.starts_with("pair-") && name.len() == "pair-".len() + 12, "{name}");
        }
        assert_ne!(generated[0].dir, generated[1].dir, "other params, another folder");
        let again = validate("  - {generate: pair, params: {text: hi}, role: train}\n").expect("valid");
        let Origin::Generate(g) = &again.sources[0].origin else {
            panic!("a generate source")
        };
        assert_eq!(g.dir, generated[1].dir, "defaults written out name the same folder");
    }

    #[test]
    fn scene_source_mistakes_name_their_position() {
        let both = error("  - {glob: \"s/*\", generate: pair, role: train}\n");
        assert!(
            both.starts_with("dir/p.yaml:3:5: a scene source takes either `glob:` (scene folders) or `generate:`"),
            "{both}"
        );
        let neither = error("  - {role: train}\n");
        assert!(
            neither.starts_with("dir/p.yaml:3:5: a scene source takes either"),
            "{neither}"
        );
        let unknown = error("  - role: train\n    generate: pear\n");
        assert_eq!(
            unknown,
            "dir/p.yaml:4:15: unknown scene generator `pear`; known generators: pair"
        );
        let params = error("  - generate: pair\n    params: {txt: 1}\n    role: train\n");
        assert_eq!(
            params,
            "dir/p.yaml:4:13: invalid params for scene generator `pair`: expected {text}, got {\"txt\":1}"
        );
        let glob_params = error("  - {glob: \"s/*\", params: {text: a}, role: train}\n");
        assert!(
            glob_params.starts_with("dir/p.yaml:3:27: `params:` goes with `generate:`"),
            "{glob_params}"
        );
        let field = error("  - {generator: pair, role: train}\n");
        assert!(field.starts_with("dir/p.yaml:3:"), "{field}");
        assert!(
            field.ends_with("unknown field `generator`, expected one of glob, generate, params, role, allow_empty"),
            "{field}"
        );
    }

    #[test]
    fn zero_workers_is_refused_where_it_is_written() {
        let text = "pipeline: p\nworkers: 0\nscenes: []\nstages: []\n";
        let errors = PipelineSpec::parse(text, Path::new("dir/p.yaml"))
            .unwrap_err()
            .to_string();
        assert!(errors.contains("dir/p.yaml:2:10: workers: 0"), "{errors}");
        assert!(errors.contains("give at least 1 worker thread"), "{errors}");
    }

    #[test]
    fn tidy_removes_dot_and_resolvable_dot_dot() {
        assert_eq!(tidy(Path::new("a/./b/../c")), Path::new("a/c"));
        assert_eq!(tidy(Path::new("pipelines/../work/x")), Path::new("work/x"));
        assert_eq!(tidy(Path::new("../x")), Path::new("../x"));
        assert_eq!(tidy(Path::new("a/..")), Path::new("."));
    }
}
