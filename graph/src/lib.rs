//! lrf-flow's graph crate: the engine: YAML pipeline spec → validated DAG → timely dataflow; stage trait and registry; content-addressed artifact store.
//!
//! Not built yet: its contents are tracked by issue #3. The crate exists so the workspace has
//! the layout of DESIGN.md from the start; it exports nothing.
