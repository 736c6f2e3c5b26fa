//! lrf-flow's stages crate: the built-in stages, thin plugins wiring formats, splat and vae into the engine.
//!
//! Not built yet: its contents are tracked by issue #6. The crate exists so the workspace has
//! the layout of DESIGN.md from the start; it exports nothing.
