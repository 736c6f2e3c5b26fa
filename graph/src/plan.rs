//! The plan: every stage instance (stage × scene, or stage once for global stages) with its
//! artifact key, computed from scene content and parameters alone, before anything runs. A run
//! computes exactly the instances whose keys are missing from the store.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use crate::key::{ArtifactKey, KeyHasher, canonical_json};
use crate::pipeline::{Origin, Pipeline, Source};
use crate::scenes::Scene;
use crate::stage::{FailedInput, Input, Scope};
use crate::store::Store;

/// One unit of work: a stage on one scene, or a global stage once.
#[derive(Debug, Clone)]
pub struct Instance {
    pub stage: usize,
    pub scene: Option<usize>,
    pub key: ArtifactKey,
    /// Input port → what it reads: one source, or one per scene for a global stage reading a
    /// per-scene source.
    pub inputs: Vec<(String, Vec<InputSource>)>,
    /// A pinned global stage: its artifact is given, never computed.
    pub pinned: bool,
}

impl Instance {
    /// This instance without the inputs that failed upstream (by port and scene), under a key that names
    /// them, so that it never stands in for the complete artifact.
    pub fn without_scenes(&self, failed: &[FailedInput], scenes: &[Scene]) -> Instance {
        let left_out = |port: &str, source: &InputSource| {
            source.scene.is_some_and(|s| {
                failed
                    .iter()
                    .any(|f| f.port == port && f.scene.as_deref() == Some(scenes[s].name.as_str()))
            })
        };
        let mut names: Vec<String> = failed.iter().map(|f| format!("{}\0{f}", f.port)).collect();
        names.sort();
        names.dedup();
        let mut hasher = KeyHasher::new("partial");
        hasher.field(&self.key.0);
        for name in &names {
            hasher.field(name.as_bytes());
        }
        Instance {
            key: hasher.finish(),
            inputs: self
                .inputs
                .iter()
                .map(|(port, sources)| {
                    let kept = sources.iter().filter(|s| !left_out(port, s)).cloned().collect();
                    (port.clone(), kept)
                })
                .collect(),
            ..self.clone()
        }
    }
}

/// One artifact (or scene folder) an instance reads.
#[derive(Debug, Clone)]
pub struct InputSource {
    /// The scene it belongs to, for per-scene sources.
    pub scene: Option<usize>,
    pub key: ArtifactKey,
    /// The scene folder, or the output port's path inside the artifact.
    pub path: PathBuf,
}

/// Every instance of one stage.
#[derive(Debug, Clone, Default)]
pub struct StagePlan {
    pub instances: Vec<Instance>,
    /// Scene index → position in `instances` (per-scene stages).
    by_scene: BTreeMap<usize, usize>,
}

impl StagePlan {
    pub fn instance(&self, scene: Option<usize>) -> Option<&Instance> {
        match scene {
            Some(s) => self.by_scene.get(&s).map(|&i| &self.instances[i]),
            None => self.instances.first(),
        }
    }
}

pub struct Plan {
    pub scenes: Vec<Scene>,
    pub stages: Vec<StagePlan>,
}

impl Plan {
    /// Computes every key. Fails only on a pin that names no stored artifact.
    pub fn new(pipeline: &Pipeline, scenes: Vec<Scene>, store: &Store) -> Result<Plan, String> {
        let mut stages: Vec<StagePlan> = Vec::new();
        for (index, node) in pipeline.stages.iter().enumerate() {
            let mut plan = StagePlan::default();
            let members: Vec<usize> = (0..scenes.len())
                .filter(|&s| node.roles.contains(&scenes[s].role))
                .collect();
            let add = |plan: &mut StagePlan,
                       scene: Option<usize>,
                       inputs: Vec<(String, Vec<InputSource>)>,
                       pinned: Option<ArtifactKey>| {
                let key = pinned.unwrap_or_else(|| instance_key(pipeline, index, scene.map(|s| &scenes[s]), &inputs));
                if let Some(s) = scene {
                    plan.by_scene.insert(s, plan.instances.len());
                }
                plan.instances.push(Instance {
                    stage: index,
                    scene,
                    key,
                    inputs,
                    pinned: pinned.is_some(),
                });
            };
            match node.scope() {
                Scope::PerScene => {
                    for &s in &members {
                        let inputs = node
                            .inputs
                            .iter()
                            .map(|b| {
                                (
                                    b.port.clone(),
                                    vec![source(&b.source, Some(s), &scenes, &stages, store)],
                                )
                            })
                            .collect();
                        add(&mut plan, Some(s), inputs, None);
                    }
                }
                Scope::Global => {
                    let pinned = match &node.pin {
                        Some(prefix) => Some(
                            pin(store, prefix, node.stage.kind()).map_err(|e| format!("stage `{}`: {e}", node.id))?,
                        ),
                        None => None,
                    };
                    let inputs = node
                        .inputs
                        .iter()
                        .map(|b| {
                            let per_scene = match &b.source {
                                Source::Scenes => true,
                                Source::Stage { stage, .. } => pipeline.stages[*stage].scope() == Scope::PerScene,
                            };
                            let sources = if per_scene {
                                members
                                    .iter()
                                    .filter(|&&s| produced(&b.source, s, &stages))
                                    .map(|&s| source(&b.source, Some(s), &scenes, &stages, store))
                                    .collect()
                            } else {
                                vec![source(&b.source, None, &scenes, &stages, store)]
                            };
                            (b.port.clone(), sources)
                        })
                        .collect();
                    add(&mut plan, None, inputs, pinned);
                }
            }
            stages.push(plan);
        }
        Ok(Plan { scenes, stages })
    }

    /// Every key the pipeline references (what `gc` keeps).
    pub fn keys(&self) -> impl Iterator<Item = ArtifactKey> + '_ {
        self.stages.iter().flat_map(|s| s.instances.iter().map(|i| i.key))
    }

    /// The stage inputs of one instance as paths, for its `Job`.
    pub fn job_inputs(&self, instance: &Instance, per_scene_stage: bool) -> BTreeMap<String, Input> {
        instance
            .inputs
            .iter()
            .map(|(port, sources)| {
                let input = match sources.as_slice() {
                    [one] if one.scene.is_none() || per_scene_stage => Input::One(one.path.clone()),
                    many => Input::PerScene(
                        many.iter()
                            .filter_map(|i| i.scene.map(|s| (self.scenes[s].name.clone(), i.path.clone())))
                            .collect(),
                    ),
                };
                (port.clone(), input)
            })
            .collect()
    }

    /// Per stage: (cached, to compute), as `lrf-flow plan` prints.
    pub fn summary(&self, pipeline: &Pipeline, store: &Store) -> String {
        let mut text = format!(
            "pipeline {} — {} scenes, store {}\n",
            pipeline.name,
            self.scenes.len(),
            store.root().display()
        );
        for source in &pipeline.sources {
            if let Origin::Generate(g) = &source.origin {
                let _ = writeln!(
                    text,
                    "  {} scenes generated by `{}` in {}",
                    source.role,
                    g.generator.name,
                    g.dir.display()
                );
            }
        }
        let width = pipeline.stages.iter().map(|s| s.id.len()).max().unwrap_or(5).max(5);
        let _ = writeln!(
            text,
            "  {:width$}  {:>9}  {:>7}  {:>7}",
            "stage", "scope", "cached", "compute"
        );
        let (mut all_cached, mut all_missing) = (0, 0);
        for (node, plan) in pipeline.stages.iter().zip(&self.stages) {
            let cached = plan.instances.iter().filter(|i| store.contains(&i.key)).count();
            let missing = plan.instances.len() - cached;
            all_cached += cached;
            all_missing += missing;
            let scope = match node.scope() {
                Scope::PerScene => "per-scene",
                Scope::Global if node.pin.is_some() => "pinned",
                Scope::Global => "global",
            };
            let _ = writeln!(text, "  {:width$}  {scope:>9}  {cached:>7}  {missing:>7}", node.id);
        }
        let _ = writeln!(text, "total: {all_cached} cached, {all_missing} to compute");
        text
    }
}

/// The stored artifact a pin names, checked to come from a stage of the same kind.
fn pin(store: &Store, prefix: &str, kind: &str) -> Result<ArtifactKey, String> {
    let key = store.resolve(prefix)?;
    let manifest = store
        .manifest(&key)
        .map_err(|e| format!("pin {prefix:?}: unreadable manifest: {e}"))?;
    if manifest.kind != kind {
        return Err(format!(
            "pin {prefix:?} is an artifact of kind `{}` (stage `{}`), not `{kind}`",
            manifest.kind, manifest.stage
        ));
    }
    Ok(key)
}

/// Whether a per-scene source has an output for scene `s` (its roles may be narrower).
fn produced(source: &Source, s: usize, stages: &[StagePlan]) -> bool {
    match source {
        Source::Scenes => true,
        Source::Stage { stage, .. } => stages[*stage].by_scene.contains_key(&s),
    }
}

fn source(source: &Source, scene: Option<usize>, scenes: &[Scene], stages: &[StagePlan], store: &Store) -> InputSource {
    match source {
        Source::Scenes => {
            let s = scene.expect("scene sources are read per scene");
            InputSource {
                scene: Some(s),
                key: scenes[s].key,
                path: scenes[s].dir.clone(),
            }
        }
        Source::Stage { stage, port } => {
            // A global upstream has one instance; validation guarantees a per-scene one covers `scene`.
            let upstream = &stages[*stage];
            let instance = upstream
                .instance(scene)
                .or_else(|| upstream.instance(None))
                .expect("validated source");
            InputSource {
                scene: instance.scene,
                key: instance.key,
                path: store.path(&instance.key).join(port),
            }
        }
    }
}

/// blake3 of kind, version, canonical params, the scene (per-scene stages) and input keys.
fn instance_key(
    pipeline: &Pipeline,
    stage: usize,
    scene: Option<&Scene>,
    inputs: &[(String, Vec<InputSource>)],
) -> ArtifactKey {
    let node = &pipeline.stages[stage];
    let mut hasher = KeyHasher::new("lrf-artifact");
    hasher
        .field(node.stage.kind().as_bytes())
        .field(&node.stage.version().to_le_bytes())
        .field(canonical_json(&node.params).as_bytes());
    if let Some(scene) = scene {
        hasher.key(&scene.key);
    }
    for (port, sources) in inputs {
        hasher
            .field(port.as_bytes())
            .field(&(sources.len() as u64).to_le_bytes());
        for source in sources {
            let port = source
                .path
                .file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default();
            hasher.key(&source.key).field(port);
        }
    }
    hasher.finish()
}
