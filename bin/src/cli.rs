//! The `lrf-flow` command line. Each subcommand is a thin wrapper: the work lives in the library
//! crates (formats/, synth/, ...), so a reader goes from here to the code in one hop.
//!
//! [`main_with`] is the whole program with extra stage kinds: a crate that registers its own stages
//! builds a binary with every built-in stage and command too (see `examples/custom-stage/`).

use std::sync::OnceLock;

use clap::{Parser, Subcommand};
use lrf_graph::Registry;

use crate::{flow, inspect, synth, view};

/// Latent radiance fields over corpora of scenes.
///
/// lrf-flow reconstructs 3D scenes in the latent space of an image autoencoder (LRF, ICLR 2025).
/// Scenes are COLMAP reconstructions in the 3DGS layout: <scene>/images*/ and <scene>/sparse/0/.
///
/// Start with `lrf-flow synth --out work/synth` to make small test scenes, then
/// `lrf-flow inspect work/synth/scene000` to see what a scene holds.
///
/// A pipeline file as the first argument runs it: `lrf-flow pipelines/full.yaml -w 2` is
/// `lrf-flow run pipelines/full.yaml -w 2` (see `lrf-flow run --help`).
#[derive(Parser)]
#[command(
    name = "lrf-flow",
    version,
    propagate_version = true,
    max_term_width = 100,
    override_usage = "lrf-flow <PIPELINE.yaml> [RUN OPTIONS]\n       lrf-flow <COMMAND>"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Synth(synth::SynthArgs),
    Inspect(inspect::InspectArgs),
    Run(flow::RunArgs),
    Plan(flow::PlanArgs),
    Gc(flow::GcArgs),
    Verify(flow::VerifyArgs),
    Bench(flow::BenchArgs),
    Watch(flow::WatchArgs),
    View(view::ViewArgs),
}

/// What a plugin adds to the registry (stage kinds, scene generators), applied by [`flow::registry`].
type Plugins = Box<dyn Fn(&mut Registry) + Send + Sync>;
static PLUGINS: OnceLock<Plugins> = OnceLock::new();

/// Adds the plugins' stage kinds to `registry` (nothing for the plain `lrf-flow` binary).
pub(crate) fn add_plugins(registry: &mut Registry) {
    if let Some(plugins) = PLUGINS.get() {
        plugins(registry);
    }
}

/// Runs the `lrf-flow` command line with the stage kinds `plugins` registers beside the built-in ones,
/// e.g. `registry.register::<MyStage>()`; `lrf-flow`'s own `main` is `main_with(|_| {})`.
pub fn main_with(plugins: impl Fn(&mut Registry) + Send + Sync + 'static) -> std::process::ExitCode {
    let _ = PLUGINS.set(Box::new(plugins));
    let retained = lrf_vae::retain_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    if !retained {
        tracing::debug!("the allocator refused the memory-retention settings: large buffers are faulted in per pass");
    }
    let cli = Cli::parse_from(with_implied_run(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Synth(args) => synth::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Run(args) => flow::run(args),
        Command::Plan(args) => flow::plan(args),
        Command::Gc(args) => flow::gc(args),
        Command::Verify(args) => flow::verify(args),
        Command::Bench(args) => flow::bench(args),
        Command::Watch(args) => flow::watch(args),
        Command::View(args) => view::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `lrf-flow p.yaml ...` is `lrf-flow run p.yaml ...`: a first argument that is neither a subcommand nor an
/// option, and names a YAML file (or any existing file), gets `run` put before it. A mistyped subcommand
/// stays an error.
fn with_implied_run(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let Some(first) = args.get(1) else { return args };
    let text = first.to_string_lossy();
    let command = text == "help" || Cli::command().get_subcommands().any(|c| c.get_name() == text);
    let pipeline = text.ends_with(".yaml") || text.ends_with(".yml") || std::path::Path::new(first).is_file();
    if !command && !text.starts_with('-') && pipeline {
        args.insert(1, "run".into());
    }
    args
}

/// Writes a command's output to stdout; a closed pipe (`lrf-flow inspect ... | head`) is not an error.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn a_pipeline_file_as_first_argument_means_run() {
        let args = |list: &[&str]| list.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let cli = Cli::parse_from(with_implied_run(args(&["lrf-flow", "pipelines/full.yaml", "-w", "2"])));
        assert!(matches!(cli.command, Command::Run(_)));
        let cli = Cli::parse_from(with_implied_run(args(&["lrf-flow", "run", "p.yml"])));
        assert!(matches!(cli.command, Command::Run(_)));
        let cli = Cli::parse_from(with_implied_run(args(&["lrf-flow", "plan", "p.yaml"])));
        assert!(matches!(cli.command, Command::Plan(_)));
        // A mistyped subcommand is still reported as one.
        assert_eq!(with_implied_run(args(&["lrf-flow", "rnu"])), args(&["lrf-flow", "rnu"]));
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("lrf-flow <PIPELINE.yaml> [RUN OPTIONS]"), "{help}");
    }
}
