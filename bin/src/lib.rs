//! lrf-flow as a library: the command line, for binaries that add their own stage kinds
//! ([`cli::main_with`]).

pub mod cli;
mod fit_bench;
mod flow;
mod inspect;
mod synth;
mod view;

pub(crate) use cli::print;
