//! procedural scenes
