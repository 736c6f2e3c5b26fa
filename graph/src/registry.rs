//! The stage kinds and scene generators a pipeline may name. Built-in kinds register here; a
//! custom binary depending on lrf-graph registers its own the same way before loading a pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::stage::{Stage, StageKind};

/// What a stage factory may need beyond its parameters.
pub struct BuildContext {
    /// The pipeline file's folder: relative paths in parameters are relative to it.
    pub base_dir: PathBuf,
}

type Factory = dyn Fn(serde_json::Value, &BuildContext) -> Result<Arc<dyn Stage>, String> + Send + Sync;
type CheckParams = dyn Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync;
type Generate = dyn Fn(&serde_json::Value, &Path) -> anyhow::Result<()> + Send + Sync;

/// A scene generator, as a `generate:` scene source names it: it writes scene folders (one
/// subfolder each) into an empty folder, from its parameters alone.
#[derive(Clone)]
pub struct Generator {
    pub name: String,
    /// Bump it when the same parameters would generate different scenes.
    pub version: u32,
    check: Arc<CheckParams>,
    generate: Arc<Generate>,
}

impl Generator {
    /// The parameters as written (`{}` when absent) → canonical parameters (defaults filled in),
    /// or what is wrong with them.
    pub fn check(&self, params: serde_json::Value) -> Result<serde_json::Value, String> {
        (self.check)(params)
    }

    /// Writes the scenes of canonical `params` into the existing, empty folder `out`.
    pub fn generate(&self, params: &serde_json::Value, out: &Path) -> anyhow::Result<()> {
        (self.generate)(params, out)
    }
}

/// Stage kinds and scene generators by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<Factory>>,
    generators: BTreeMap<String, Generator>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The kinds every lrf-flow binary knows: today only `exec`.
    pub fn builtin() -> Self {
        let mut registry = Self::new();
        registry.insert(crate::exec::KIND, crate::exec::build);
        registry
    }

    /// Registers a Rust stage type; its serde fields are its parameters, checked by `validate`, with
    /// file names resolved by `resolve_paths`.
    pub fn register<T: StageKind>(&mut self) -> &mut Self {
        self.insert(T::KIND, |params, context| {
            let mut stage: T = serde_json::from_value(params).map_err(|e| e.to_string())?;
            stage.validate()?;
            stage.resolve_paths(&context.base_dir)?;
            Ok(Arc::new(stage) as Arc<dyn Stage>)
        })
    }

    /// Registers a kind with a factory that turns parameters into a stage (for stages that need
    /// the build context or captured state).
    pub fn insert(
        &mut self,
        kind: &str,
        factory: impl Fn(serde_json::Value, &BuildContext) -> Result<Arc<dyn Stage>, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.kinds.insert(kind.to_owned(), Arc::new(factory));
        self
    }

    /// Registers a scene generator for `scenes: [{generate: NAME, params: {...}, role: ...}]`.
    ///
    /// `check` turns the parameters as written (`{}` when absent) into canonical parameters,
    /// defaults filled in, or says what is wrong with them (reported at the pipeline file's line);
    /// the canonical parameters name the generated folder and are what `generate` receives, with
    /// an empty folder to write one subfolder per scene into. Generation must be deterministic:
    /// the folder is generated once and reused while name, version and parameters stay the same.
    pub fn register_generator(
        &mut self,
        name: &str,
        version: u32,
        check: impl Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync + 'static,
        generate: impl Fn(&serde_json::Value, &Path) -> anyhow::Result<()> + Send + Sync + 'static,
    ) -> &mut Self {
        let generator = Generator {
            name: name.to_owned(),
            version,
            check: Arc::new(check),
            generate: Arc::new(generate),
        };
        self.generators.insert(name.to_owned(), generator);
        self
    }

    /// The generator registered under `name`.
    pub fn generator(&self, name: &str) -> Option<&Generator> {
        self.generators.get(name)
    }

    /// Known generator names, sorted, for "unknown generator" errors.
    pub fn generators(&self) -> Vec<&str> {
        self.generators.keys().map(String::as_str).collect()
    }

    /// Known kind names, sorted, for "unknown kind" errors.
    pub fn kinds(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }

    /// Builds a stage; `None` when the kind is unknown, `Some(Err)` when its parameters are wrong.
    pub fn build(
        &self,
        kind: &str,
        params: serde_json::Value,
        base_dir: &Path,
    ) -> Option<Result<Arc<dyn Stage>, String>> {
        let factory = self.kinds.get(kind)?;
        Some(factory(
            params,
            &BuildContext {
                base_dir: base_dir.to_owned(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::stage::{Job, Port, Scope, Signature};

    /// A typed stage: its fields are its parameters, with defaults and a range check.
    #[derive(Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Blur {
        radius: u32,
        sigma: f64,
    }

    impl Default for Blur {
        fn default() -> Self {
            Blur { radius: 2, sigma: 1.5 }
        }
    }

    impl StageKind for Blur {
        const KIND: &'static str = "blur";
        const VERSION: u32 = 3;
        fn signature(&self) -> Signature {
            Signature {
                scope: Scope::PerScene,
                inputs: vec![Port::new("scene", "scene")],
                outputs: vec![Port::new("image", "image")],
            }
        }
        fn validate(&self) -> Result<(), String> {
            match self.radius {
                1..=16 => Ok(()),
                r => Err(format!("radius = {r} is out of range 1..=16")),
            }
        }
        fn run(&self, _: &Job) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn typed_stages_get_defaults_validation_and_canonical_params() {
        let mut registry = Registry::new();
        registry.register::<Blur>();
        assert_eq!(registry.kinds(), ["blur"]);
        let stage = registry
            .build("blur", serde_json::json!({"sigma": 2.0}), Path::new("."))
            .unwrap()
            .unwrap();
        assert_eq!((stage.kind(), stage.version()), ("blur", 3));
        assert_eq!(stage.params(), Ok(serde_json::json!({"radius": 2, "sigma": 2.0})));
        let error = registry
            .build("blur", serde_json::json!({"radius": 40}), Path::new("."))
            .unwrap()
            .err()
            .unwrap();
        assert_eq!(error, "radius = 40 is out of range 1..=16");
        let error = registry
            .build("blur", serde_json::json!({"radus": 4}), Path::new("."))
            .unwrap()
            .err()
            .unwrap();
        assert!(error.contains("unknown field `radus`"), "{error}");
        assert!(
            registry
                .build("sharpen", serde_json::json!({}), Path::new("."))
                .is_none()
        );
    }
}
