//! The `lrf-flow` command line. Each subcommand is a thin wrapper: the work lives in the library
//! crates (formats/, synth/, ...), so a reader goes from here to the code in one hop.

mod flow;
mod inspect;
mod synth;

use clap::{Parser, Subcommand};

/// Latent radiance fields over corpora of scenes.
///
/// lrf-flow reconstructs 3D scenes in the latent space of an image autoencoder (LRF, ICLR 2025).
/// Scenes are COLMAP reconstructions in the 3DGS layout: <scene>/images*/ and <scene>/sparse/0/.
///
/// Start with `lrf-flow synth --out work/synth` to make small test scenes, then
/// `lrf-flow inspect work/synth/scene000` to see what a scene holds.
#[derive(Parser)]
#[command(name = "lrf-flow", version, propagate_version = true, max_term_width = 100)]
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
}

fn main() -> std::process::ExitCode {
    let retained = lrf_vae::retain_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    if !retained {
        tracing::debug!("the allocator refused the memory-retention settings: large buffers are faulted in per pass");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Synth(args) => synth::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Run(args) => flow::run(args),
        Command::Plan(args) => flow::plan(args),
        Command::Gc(args) => flow::gc(args),
        Command::Verify(args) => flow::verify(args),
        Command::Bench(args) => flow::bench(args),
        Command::Watch(args) => flow::watch(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes a command's output to stdout; a closed pipe (`lrf-flow inspect ... | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
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
}
