//! lrf-flow's engine: a YAML pipeline file becomes a validated graph of stages (`Pipeline`), the
//! graph and the scene collection become a `Plan` of content-addressed artifacts, and the plan
//! runs on timely dataflow, computing only the artifacts missing from the `Store`.
//!
//! ```text
//! spec (YAML, positions) ─► pipeline (validated DAG) ─► plan (keys) ─► dataflow (timely) ─► store + report
//! ```

pub mod bench;
pub mod dataflow;
pub mod error;
pub mod exec;
mod executor;
pub mod file_hashes;
pub mod key;
pub mod pipeline;
pub mod plan;
mod pool;
mod progress;
pub mod registry;
pub mod report;
pub mod scenes;
pub mod session;
pub mod spec;
pub mod stage;
pub mod store;
pub mod testing;
pub mod watch;

pub use dataflow::{Cluster, RunOptions, WorkerInit, run, threads_per_worker};
pub use error::{SpecError, SpecErrors};
pub use key::ArtifactKey;
pub use pipeline::Pipeline;
pub use plan::Plan;
pub use registry::Registry;
pub use report::{Outcome, RunReport, Status};
pub use scenes::{RejectedScene, Scene};
pub use session::{GcOptions, OpenOptions, Session, StoredArtifact, VerifyReport};
pub use stage::{FailedInput, Input, Job, Port, Scope, Signature, Stage, StageKind};
pub use store::{Manifest, Store};
