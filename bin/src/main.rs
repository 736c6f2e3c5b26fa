//! The `lrf-flow` binary: the command line with the built-in stages.

fn main() -> std::process::ExitCode {
    lrf_flow::cli::main_with(|_| {})
}
