//! lrf-flow's vae crate: autoencoders in tch (AutoencoderKL, TAESD family), losses and metrics.
//!
//! Not built yet: its contents are tracked by issue #5. The crate exists so the workspace has
//! the layout of DESIGN.md from the start; it exports nothing.
