//! The pipeline as a timely dataflow: one operator per stage. Records are small — a scene and
//! whether it succeeded — because the plan already holds every key and path; the dataflow decides where and
//! when each instance runs. Per-scene records are exchanged by scene across workers; a global
//! stage gathers its inputs on one worker, runs when its input frontier has passed (every scene
//! of its roles has arrived), and its one record is broadcast to the per-scene stages after it.
//! Operators hand instances to the job pool ([`crate::pool`]) and hold their capability until the
//! answer comes back, so worker threads never block on a computation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline as Local;
use timely::dataflow::operators::vec::{Broadcast, Filter, Map};
use timely::dataflow::operators::{Capability, Concatenate, Exchange, Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, StreamVec};

use crate::executor::Executor;
use crate::pipeline::{Pipeline, Source};
use crate::plan::Plan;
use crate::pool::{JobPool, Submission};
use crate::progress::Progress;
use crate::report::{Outcome, RunReport};
use crate::stage::{FailedInput, Scope};
use crate::store::Store;

/// The scene index carried by a global stage's record.
const GLOBAL: u32 = u32::MAX;

/// What flows out of every stage: one instance's scene (or [`GLOBAL`]) and whether it succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    scene: u32,
    ok: bool,
}
/// A record as it enters a stage, tagged with the input slot it came on (slot 0 is the scene trigger).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Tagged {
    slot: u16,
    record: Record,
}

/// Called on each job thread (one per worker) before it starts, with (thread index, thread count):
/// the place to size per-thread pools (libtorch's) so workers × threads does not oversubscribe the
/// cores.
pub type WorkerInit = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// Several processes sharing one store: timely's cluster mode, configured from our own options.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// This process's index in `addresses`.
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub addresses: Vec<String>,
}

pub struct RunOptions {
    /// Worker threads in this process.
    pub workers: usize,
    /// Draw progress bars (they are also hidden when stderr is not a terminal).
    pub progress: bool,
    pub cluster: Option<Cluster>,
    /// Cluster mode: how long to wait for every process to connect. timely's connection set-up
    /// cannot be cancelled, so when it runs out the process prints why and exits with status 2.
    pub startup_timeout: Duration,
    pub worker_init: Option<WorkerInit>,
    /// Re-hash each stored artifact against its manifest before reusing it; damaged ones are computed
    /// again (`run --verify`).
    pub verify: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 1,
            progress: false,
            cluster: None,
            startup_timeout: Duration::from_secs(60),
            worker_init: None,
            verify: false,
        }
    }
}

/// Threads each worker may give a thread pool of its own so all workers together fill the cores.
pub fn threads_per_worker(workers: usize) -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cores / workers.max(1)).max(1)
}

/// Runs the plan: every instance whose key is missing is computed, on `options.workers` threads
/// (times processes in cluster mode). The report covers this process's instances.
pub fn run(pipeline: Arc<Pipeline>, plan: Arc<Plan>, store: Store, options: RunOptions) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    // Held until the run ends, so that a gc cannot remove its work in progress.
    let _lock = store
        .lock_for_run()
        .map_err(|e| anyhow::anyhow!("locking the store {}: {e}", store.root().display()))?;
    tracing::info!(pipeline = %pipeline.name, scenes = plan.scenes.len(), instances = plan.keys().count(), workers = options.workers, "run starts");
    let totals: Vec<(String, usize)> = pipeline
        .stages
        .iter()
        .zip(&plan.stages)
        .map(|(n, p)| (n.id.clone(), p.instances.len()))
        .collect();
    let progress = Progress::new(&totals, options.progress);
    let executor = Arc::new(Executor::new(
        pipeline.clone(),
        plan.clone(),
        store,
        progress,
        options.verify,
    ));
    let workers = options.workers.max(1);
    let communication = match &options.cluster {
        None => timely::CommunicationConfig::Process(workers),
        Some(cluster) => timely::CommunicationConfig::Cluster {
            threads: workers,
            process: cluster.process,
            addresses: cluster.addresses.clone(),
            report: false,
            zerocopy: false,
        },
    };
    let config = timely::Config {
        communication,
        worker: timely::WorkerConfig::default(),
    };
    let pool = Arc::new(
        JobPool::new(workers, executor.clone(), options.worker_init.clone())
            .map_err(|e| anyhow::anyhow!("starting the job threads: {e}"))?,
    );
    let connected = options
        .cluster
        .as_ref()
        .map(|c| startup_watchdog(c, options.startup_timeout));
    let shared = (executor.clone(), pool.clone());
    let process = options.cluster.as_ref().map(|c| c.process);
    let gathered: Arc<std::sync::Mutex<Option<Vec<Outcome>>>> = Arc::default();
    let sink = gathered.clone();
    let guards = timely::execute(config, move |worker| {
        // In a cluster, a worker dies when a peer process does (its connection closes). timely's threads
        // then never finish, so joining them would hang: stop the process with a message instead.
        let _peer_loss = process.map(PeerLoss);
        drive(worker, &shared.0, &shared.1);
        if process.is_some() {
            gather_outcomes(worker, &shared.0, workers, &sink);
        }
    })
    .map_err(|e| anyhow::anyhow!("starting the workers: {e}"))?;
    drop(connected);
    for result in guards.join() {
        result.map_err(|e| anyhow::anyhow!("a worker thread died: {e}"))?;
    }
    drop(pool);
    // Process 0 of a cluster reports every process's instances; the others, their own.
    let outcomes = match gathered.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(all) => all,
        None => executor.take_outcomes(),
    };
    Ok(RunReport::new(
        &pipeline,
        &plan,
        outcomes,
        workers,
        started.elapsed().as_secs_f64(),
    ))
}

/// After a cluster run: the first worker of each process sends its process's outcomes to worker 0 (on
/// process 0), which puts them all into `sink`. They travel as JSON, the report's own format.
fn gather_outcomes(
    worker: &mut timely::worker::Worker,
    executor: &Executor,
    threads: usize,
    sink: &std::sync::Mutex<Option<Vec<Outcome>>>,
) {
    use timely::dataflow::operators::Inspect;
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<String>>>::new();
    let probe = ProbeHandle::new();
    let received = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let collect = received.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        input
            .to_stream(scope)
            .exchange(|_: &String| 0)
            .inspect(move |line: &String| collect.borrow_mut().push(line.clone()))
            .probe_with(&probe);
    });
    if worker.index() % threads.max(1) == 0 {
        for outcome in executor.outcomes() {
            input.send(serde_json::to_string(&outcome).expect("an outcome serialises"));
        }
    }
    input.advance_to(1);
    while probe.less_than(input.time()) {
        worker.step_or_park(None);
    }
    if worker.index() == 0 {
        let outcomes = received
            .borrow()
            .iter()
            .filter_map(|line| {
                serde_json::from_str(line)
                    .inspect_err(|error| tracing::error!(%error, line, "an outcome from another process is unreadable"))
                    .ok()
            })
            .collect();
        *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcomes);
    }
}

/// Stops a cluster process whose worker is unwinding: another process died (or its machine did).
struct PeerLoss(usize);

impl Drop for PeerLoss {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "error: process {} lost its connection to another process of the cluster, which stopped (or its \
                 machine did). The artifacts committed so far are kept: start every process again to resume.",
                self.0
            );
            // _exit, not exit: libtorch's static destructors crash while its threads still run.
            // SAFETY: ends the process at once; nothing is left half-committed (artifacts appear by rename).
            unsafe { libc::_exit(3) };
        }
    }
}

/// Exits the process with a clear message unless the returned sender is dropped (all peers
/// connected) within `timeout`.
fn startup_watchdog(cluster: &Cluster, timeout: Duration) -> std::sync::mpsc::Sender<()> {
    let (sender, receiver) = std::sync::mpsc::channel::<()>();
    let (process, addresses) = (cluster.process, cluster.addresses.join(", "));
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = receiver.recv_timeout(timeout) {
            eprintln!(
                "error: cluster start-up timed out after {} s: process {process} could not connect to every process of \
                 [{addresses}]. Start each process with the same --processes and --hostfile and its own --process, \
                 and check that the ports are free and reachable.",
                timeout.as_secs()
            );
            std::process::exit(2);
        }
    });
    sender
}

/// Builds the dataflow on one worker, feeds the scenes (worker 0) and runs it to completion.
fn drive(worker: &mut timely::worker::Worker, executor: &Arc<Executor>, pool: &Arc<JobPool>) {
    let mut scenes = InputHandle::<u64, CapacityContainerBuilder<Vec<Record>>>::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let trigger = scenes.to_stream(scope);
        let mut outputs: Vec<StreamVec<'_, u64, Record>> = Vec::new();
        for stage in 0..executor.pipeline.stages.len() {
            let inputs = stage_inputs(
                &executor.pipeline,
                &executor.plan,
                stage,
                &trigger,
                &outputs,
                scope.peers(),
            );
            let merged = scope.concatenate(inputs);
            let output = match executor.pipeline.stages[stage].scope() {
                Scope::PerScene => per_scene(merged, executor.clone(), pool.clone(), stage),
                Scope::Global => global(
                    merged,
                    executor.clone(),
                    pool.clone(),
                    stage,
                    scope.index() == stage % scope.peers(),
                ),
            };
            outputs.push(output);
        }
        scope.concatenate(outputs).probe_with(&probe);
    });
    if worker.index() == 0 {
        for scene in 0..executor.plan.scenes.len() {
            scenes.send(Record {
                scene: scene as u32,
                ok: true,
            });
        }
    }
    scenes.advance_to(1);
    // Park between events: a worker whose scenes are done must not spin (`step_while` never parks) and take
    // a core from the workers still computing; messages from other workers unpark it.
    while probe.less_than(scenes.time()) {
        worker.step_or_park(None);
    }
}

/// A stage's input streams, tagged by slot and routed: per-scene records by scene to a
/// per-scene stage, broadcast from a global stage, everything to one worker for a global stage.
fn stage_inputs<'s>(
    pipeline: &Pipeline,
    plan: &Plan,
    stage: usize,
    trigger: &StreamVec<'s, u64, Record>,
    outputs: &[StreamVec<'s, u64, Record>],
    peers: usize,
) -> Vec<StreamVec<'s, u64, Tagged>> {
    let node = &pipeline.stages[stage];
    let member: Arc<Vec<bool>> = Arc::new(plan.scenes.iter().map(|s| node.roles.contains(&s.role)).collect());
    let keep = move |r: &Record| r.scene == GLOBAL || member[r.scene as usize];
    let target = (stage % peers) as u64;
    let route = move |stream: StreamVec<'s, u64, Record>, global_source: bool| match node.scope() {
        Scope::PerScene if global_source => stream.broadcast(),
        Scope::PerScene => stream.exchange(|r: &Record| r.scene as u64),
        Scope::Global => stream.exchange(move |_: &Record| target),
    };
    let mut streams = vec![route(trigger.clone().filter(keep.clone()), false).map(|record| Tagged { slot: 0, record })];
    for (slot, binding) in node.inputs.iter().enumerate() {
        if let Source::Stage { stage: upstream, .. } = binding.source {
            let from_global = pipeline.stages[upstream].scope() == Scope::Global;
            let slot = slot as u16 + 1;
            streams.push(
                route(outputs[upstream].clone().filter(keep.clone()), from_global)
                    .map(move |record| Tagged { slot, record }),
            );
        }
    }
    streams
}

/// What a stage has received for one timestamp.
struct Received {
    capability: Capability<u64>,
    /// Instances handed to the pool and not yet answered.
    running: usize,
    /// Per scene: how many per-scene slots arrived, and the failed inputs.
    scenes: HashMap<u32, (usize, Vec<FailedInput>)>,
    /// Scenes whose per-scene slots have all arrived, not yet submitted: kept as they complete, so that
    /// an activation never scans every pending scene (which made a run quadratic in scenes).
    complete: Vec<u32>,
    /// Global input slots: arrived, and whether it succeeded.
    globals: BTreeMap<u16, bool>,
}

/// Input slots of a stage: which are per-scene (counted per scene) and which global.
struct Slots {
    per_scene: usize,
    global: usize,
    /// Per slot: the port, and the stage (or `scenes`) it reads.
    names: Vec<(String, String)>,
}

impl Slots {
    /// What failed on `slot`, for scene `scene` (a per-scene source) or none (a global one).
    fn failed(&self, slot: u16, scene: Option<String>) -> FailedInput {
        let (port, stage) = &self.names[slot as usize];
        FailedInput {
            port: port.clone(),
            stage: stage.clone(),
            scene,
        }
    }
}

impl Slots {
    fn of(pipeline: &Pipeline, stage: usize) -> Slots {
        let node = &pipeline.stages[stage];
        let mut slots = Slots {
            per_scene: 1,
            global: 0,
            names: vec![("scene".into(), "scenes".into())],
        };
        for binding in &node.inputs {
            let name = match &binding.source {
                Source::Scenes => "scenes".to_owned(),
                Source::Stage { stage, .. } => {
                    let global = pipeline.stages[*stage].scope() == Scope::Global;
                    if global {
                        slots.global += 1
                    } else {
                        slots.per_scene += 1
                    }
                    pipeline.stages[*stage].id.clone()
                }
            };
            slots.names.push((binding.port.clone(), name));
        }
        slots
    }
}

/// A per-scene stage: submits each scene as soon as all its inputs for that scene (and every global
/// input) have arrived, and passes on each answer.
fn per_scene<'s>(
    input: StreamVec<'s, u64, Tagged>,
    executor: Arc<Executor>,
    pool: Arc<JobPool>,
    stage: usize,
) -> StreamVec<'s, u64, Record> {
    let slots = Slots::of(&executor.pipeline, stage);
    let name = executor.pipeline.stages[stage].id.clone();
    let worker = input.scope().worker().clone();
    input.unary_frontier::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(Local, &name, move |initial, info| {
        drop(initial);
        let mut pending: BTreeMap<u64, Received> = BTreeMap::new();
        let (done, answers) = crossbeam_channel::unbounded();
        let address = info.address.to_vec();
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(output.output_index()) else {
                    return;
                };
                let time = *cap.time();
                let received = pending.entry(time).or_insert_with(|| Received {
                    capability: cap,
                    running: 0,
                    scenes: HashMap::new(),
                    complete: Vec::new(),
                    globals: BTreeMap::new(),
                });
                for Tagged {
                    slot,
                    record: Record { scene, ok },
                } in data.flat_map(|d| d.drain(..))
                {
                    if scene == GLOBAL {
                        received.globals.insert(slot, ok);
                        continue;
                    }
                    let entry = received.scenes.entry(scene).or_default();
                    entry.0 += 1;
                    if !ok {
                        entry.1.push(slots.failed(slot, None));
                    }
                    if entry.0 == slots.per_scene {
                        received.complete.push(scene);
                    }
                }
            });
            for (&time, received) in pending.iter_mut() {
                if received.globals.len() < slots.global {
                    continue;
                }
                let failed_globals: Vec<FailedInput> = received
                    .globals
                    .iter()
                    .filter(|(_, ok)| !**ok)
                    .map(|(slot, _)| slots.failed(*slot, None))
                    .collect();
                for scene in std::mem::take(&mut received.complete) {
                    let (_, mut blocked) = received.scenes.remove(&scene).unwrap_or_default();
                    blocked.extend(failed_globals.iter().cloned());
                    received.running += 1;
                    pool.submit(Submission {
                        stage,
                        scene: Some(scene as usize),
                        blocked,
                        done: done.clone(),
                        time,
                        wake: worker.sync_activator_for(address.clone()),
                    });
                }
            }
            for (time, scene, ok) in answers.try_iter() {
                let received = pending.get_mut(&time).expect("answers come for pending times");
                received.running -= 1;
                let scene = scene.expect("per-scene submissions carry their scene") as u32;
                output.session(&received.capability).give(Record { scene, ok });
            }
            // Once the frontier has passed a time, every scene of it has arrived; once its instances
            // are answered, it is done.
            pending.retain(|time, received| frontier.less_equal(time) || received.running > 0);
        }
    })
}

/// A global stage: on the worker its inputs were sent to, submits its instance once the frontier has
/// passed the timestamp, i.e. when every input record has arrived, and passes on the answer.
fn global<'s>(
    input: StreamVec<'s, u64, Tagged>,
    executor: Arc<Executor>,
    pool: Arc<JobPool>,
    stage: usize,
    is_target: bool,
) -> StreamVec<'s, u64, Record> {
    let slots = Slots::of(&executor.pipeline, stage);
    let name = executor.pipeline.stages[stage].id.clone();
    let worker = input.scope().worker().clone();
    input.unary_frontier::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(Local, &name, move |initial, info| {
        let mut capability = is_target.then_some(initial);
        let mut submitted = false;
        let mut failed: Vec<FailedInput> = Vec::new();
        let (done, answers) = crossbeam_channel::unbounded();
        let wake = worker.sync_activator_for(info.address.to_vec());
        let mut wake = Some(wake);
        move |(input, frontier), output| {
            input.for_each_stamp(|_, data| {
                for Tagged {
                    slot,
                    record: Record { scene, ok },
                } in data.flat_map(|d| d.drain(..))
                {
                    if !ok {
                        let scene = (scene != GLOBAL).then(|| executor.plan.scenes[scene as usize].name.clone());
                        failed.push(slots.failed(slot, scene));
                    }
                }
            });
            if capability.is_some() && !submitted && !frontier.less_equal(&0) {
                submitted = true;
                pool.submit(Submission {
                    stage,
                    scene: None,
                    blocked: std::mem::take(&mut failed),
                    done: done.clone(),
                    time: 0,
                    wake: wake.take().expect("submitted once"),
                });
            }
            if let Some((_, _, ok)) = answers.try_iter().next()
                && let Some(cap) = capability.take()
            {
                output.session(&cap).give(Record { scene: GLOBAL, ok });
            }
        }
    })
}
