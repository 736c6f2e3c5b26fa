//! Stage instances run on a pool of job threads, apart from the dataflow's worker threads. A worker
//! thread that ran a long instance itself (a global training stage, say) could not step its operators
//! meanwhile, and every other worker's frontier waited on it: per-scene work that was ready sat idle.
//! Workers now only route records and keep frontiers moving; the pool runs up to `threads` instances at
//! once, first come first served, and wakes the submitting operator when one finishes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use timely::scheduling::SyncActivator;

use crate::dataflow::WorkerInit;
use crate::executor::Executor;
use crate::stage::FailedInput;

/// One stage instance to bring into the store, and where to say it is done.
pub(crate) struct Submission {
    pub stage: usize,
    pub scene: Option<usize>,
    /// Failed inputs: the instance is recorded as skipped (or runs without them, see
    /// [`crate::StageKind::PARTIAL_INPUTS`]).
    pub blocked: Vec<FailedInput>,
    /// Receives `(timestamp, scene, success)`.
    pub done: Sender<(u64, Option<usize>, bool)>,
    pub time: u64,
    /// Schedules the submitting operator once `done` has the result.
    pub wake: SyncActivator,
}

pub(crate) struct JobPool {
    sender: Option<Sender<Submission>>,
    threads: Vec<JoinHandle<()>>,
}

impl JobPool {
    /// `threads` job threads, each set up by `init(index, threads)` (e.g. to size libtorch's pool).
    pub fn new(threads: usize, executor: Arc<Executor>, init: Option<WorkerInit>) -> std::io::Result<Self> {
        let (sender, receiver) = crossbeam_channel::unbounded::<Submission>();
        let threads = (0..threads.max(1))
            .map(|index| {
                let (receiver, executor, init) = (receiver.clone(), executor.clone(), init.clone());
                std::thread::Builder::new()
                    .name(format!("lrf-job-{index}"))
                    .spawn(move || {
                        if let Some(init) = init {
                            init(index, threads.max(1));
                        }
                        serve(&receiver, &executor)
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(JobPool {
            sender: Some(sender),
            threads,
        })
    }

    pub fn submit(&self, submission: Submission) {
        // The sender lives until `Drop`, and job threads outlive it, so sending cannot fail.
        self.sender
            .as_ref()
            .expect("the pool is open while the dataflow runs")
            .send(submission)
            .expect("job threads are running");
    }
}

impl Drop for JobPool {
    /// Closes the queue and waits for the job threads to finish what they hold.
    fn drop(&mut self) {
        self.sender.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve(receiver: &Receiver<Submission>, executor: &Executor) {
    for job in receiver {
        // The executor turns stage errors and panics into outcomes; this guards the pool itself, so
        // that a bug here still answers the operator instead of leaving the dataflow waiting.
        let ok = catch_unwind(AssertUnwindSafe(|| {
            executor.execute(job.stage, job.scene, &job.blocked)
        }))
        .unwrap_or(false);
        let _ = job.done.send((job.time, job.scene, ok));
        let _ = job.wake.activate();
    }
}
