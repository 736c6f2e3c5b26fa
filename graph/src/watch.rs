//! `watch`: keep a pipeline up to date while scene folders come and go.
//!
//! Each round rescans the scene sources (generating a `generate:` source's folder when it is
//! missing) and rereads the pipeline file. Once the scan has held still for one interval (so a
//! folder being copied is not run half-written), its difference from the previous scan is fed, as insertions and retractions, into a long-lived differential
//! dataflow (`SceneFlow`) that maintains the scene collection and derives the round's change
//! set: the scenes added, removed or changed, the per-scene instances they insert or retract,
//! and the global stages whose scene set changed. A non-empty change set (or an edited pipeline
//! file) runs a round.
//!
//! The planner still computes the keys: differential derives *what* changed, not the artifacts'
//! keys, so there is one planner and no twin of it here. The round then runs the plan, and the
//! content-addressed store makes it compute exactly the fired instances plus the instances
//! downstream of them whose inputs they changed (a per-scene stage reading a re-fired global
//! model); a retracted instance is simply no longer in the plan.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use differential_dataflow::VecCollection;
use differential_dataflow::input::InputSession;
use timely::communication::Allocator;
use timely::communication::allocator::thread::Thread;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::dataflow::RunOptions;
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use crate::report::RunReport;
use crate::scenes::RejectedScene;
use crate::session::Session;
use crate::stage::Scope;

/// A scene in the collection: (role, (name, content key)), keyed by role to join with stages.
type SceneRecord = (String, (String, [u8; 32]));
/// A stage reading a role: (role, (stage id, global)).
type StageRole = (String, (String, bool));
/// A stage instance: (stage id, scene; none for a global stage).
pub type InstanceName = (String, Option<String>);

/// The differential output, consolidated per round.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Change {
    /// A scene (name, key) entered or left the collection.
    Scene(String, [u8; 32]),
    /// A per-scene instance (stage, scene, scene key) entered or left.
    PerScene(String, String, [u8; 32]),
    /// A global stage's scene set, by digest, changed.
    Members(String, [u8; 32]),
}

/// A round's change set, as the differential dataflow derived it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SceneChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, different content.
    pub changed: Vec<String>,
    /// Instances to (re)compute: per-scene instances of added or changed scenes, and global
    /// stages whose scene set changed. Sorted.
    pub fired: Vec<InstanceName>,
    /// Per-scene instances no longer referenced: their scene was removed. Sorted.
    pub retracted: Vec<InstanceName>,
}

impl SceneChanges {
    /// Nothing to run or report (a scene of a role no stage reads still counts as a change).
    fn is_empty(&self) -> bool {
        self == &SceneChanges::default()
    }

    /// Reads consolidated (change, diff) pairs: an insertion fires, a lone retraction retracts.
    fn from_diffs(diffs: BTreeMap<Change, isize>) -> Self {
        let mut scenes: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        let mut per_scene: BTreeMap<InstanceName, bool> = BTreeMap::new();
        let mut fired = BTreeSet::new();
        for (change, diff) in diffs {
            let inserted = diff > 0;
            match change {
                Change::Scene(name, _) => {
                    let seen = scenes.entry(name).or_default();
                    if inserted { seen.0 = true } else { seen.1 = true }
                }
                Change::PerScene(stage, scene, _) => *per_scene.entry((stage, Some(scene))).or_default() |= inserted,
                Change::Members(stage, _) => {
                    fired.insert((stage, None));
                }
            }
        }
        let mut changes = SceneChanges::default();
        for (name, seen) in scenes {
            match seen {
                (true, true) => changes.changed.push(name),
                (true, false) => changes.added.push(name),
                _ => changes.removed.push(name),
            }
        }
        for (instance, inserted) in per_scene {
            if inserted {
                fired.insert(instance);
            } else {
                changes.retracted.push(instance);
            }
        }
        changes.fired = fired.into_iter().collect();
        changes
    }
}

/// What a round did.
pub enum Round {
    /// The pipeline ran because the change set was not empty or the pipeline file changed.
    Ran {
        changes: SceneChanges,
        report: Box<RunReport>,
        work_dir: PathBuf,
        /// Scene folders left out of the round.
        rejected: Vec<RejectedScene>,
        times: RoundTimes,
    },
    /// The pipeline could not be loaded or run; watching goes on.
    Invalid(String),
}

/// Where a round's time went, planning included, so a corpus-scale watch shows what a small change costs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundTimes {
    /// The scan that found the change settled: scene folders listed and keyed (cached file hashes).
    pub scan: Duration,
    /// The differential dataflow deriving the change set.
    pub changes: Duration,
    /// Opening the session: scenes collected again, the pipeline validated and planned.
    pub planning: Duration,
    /// The run: the dataflow over every instance, computing the fired ones.
    pub run: Duration,
}

/// What a round looks at: the pipeline file's content, the scene collection and which roles
/// each stage reads.
#[derive(Clone, PartialEq, Eq)]
struct Snapshot {
    pipeline: blake3::Hash,
    scenes: BTreeSet<SceneRecord>,
    stages: BTreeSet<StageRole>,
}

/// The long-lived differential dataflow over the scene collection, on one worker of its own
/// (the bookkeeping is tiny; the stages run in the pipeline's own dataflow).
struct SceneFlow {
    worker: Worker,
    scenes: InputSession<u64, SceneRecord, isize>,
    stages: InputSession<u64, StageRole, isize>,
    /// What the inputs hold now, to feed only the difference.
    held: (BTreeSet<SceneRecord>, BTreeSet<StageRole>),
    probe: ProbeHandle<u64>,
    output: Rc<RefCell<BTreeMap<Change, isize>>>,
}

impl SceneFlow {
    fn new() -> Self {
        let mut worker = Worker::new(
            timely::WorkerConfig::default(),
            Allocator::Thread(Thread::default()),
            None,
        );
        let mut scenes = InputSession::new();
        let mut stages = InputSession::new();
        let output = Rc::new(RefCell::new(BTreeMap::new()));
        let sink = output.clone();
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            changes(scenes.to_collection(scope), stages.to_collection(scope))
                .inspect(move |(change, _, diff): &(Change, u64, isize)| {
                    let mut sink = sink.borrow_mut();
                    *sink.entry(change.clone()).or_default() += diff;
                })
                .probe()
                .0
        });
        SceneFlow {
            worker,
            scenes,
            stages,
            held: Default::default(),
            probe,
            output,
        }
    }

    /// Feeds the snapshot's difference from the last one as one round and returns its changes.
    fn round(&mut self, now: &Snapshot) -> SceneChanges {
        feed(&mut self.scenes, &mut self.held.0, &now.scenes);
        feed(&mut self.stages, &mut self.held.1, &now.stages);
        let next = self.scenes.time() + 1;
        self.scenes.advance_to(next);
        self.stages.advance_to(next);
        self.scenes.flush();
        self.stages.flush();
        let (probe, time) = (&self.probe, *self.scenes.time());
        self.worker.step_while(|| probe.less_than(&time));
        let mut diffs = std::mem::take(&mut *self.output.borrow_mut());
        diffs.retain(|_, diff| *diff != 0);
        SceneChanges::from_diffs(diffs)
    }
}

/// Inserts what is new in `now` and retracts what is gone from it.
fn feed<D: differential_dataflow::Data>(
    input: &mut InputSession<u64, D, isize>,
    held: &mut BTreeSet<D>,
    now: &BTreeSet<D>,
) {
    for gone in held.difference(now) {
        input.remove(gone.clone());
    }
    for new in now.difference(held) {
        input.insert(new.clone());
    }
    *held = now.clone();
}

/// The change set: scenes, per-scene instances (scenes joined with the per-scene stages of
/// their role) and, per global stage, a digest of its scene set, which changes when a scene
/// of its roles comes, goes or changes. The reduce is keyed by stage, not (stage, role), so a
/// stage over several roles re-fires once. Stages are a collection too, so an edit of a stage's
/// roles flows through the same join.
fn changes<'s>(
    scenes: VecCollection<'s, u64, SceneRecord, isize>,
    stages: VecCollection<'s, u64, StageRole, isize>,
) -> VecCollection<'s, u64, Change, isize> {
    let instances = scenes.clone().join(stages);
    let per_scene = instances
        .clone()
        .filter(|(_, (_, (_, global)))| !global)
        .map(|(_, ((name, key), (stage, _)))| Change::PerScene(stage, name, key));
    let members = instances
        .filter(|(_, (_, (_, global)))| *global)
        .map(|(_, (scene, (stage, _)))| (stage, scene))
        .reduce(
            |_, members: &[(&(String, [u8; 32]), isize)], out: &mut Vec<([u8; 32], isize)>| {
                let mut hasher = blake3::Hasher::new();
                for ((name, key), _) in members {
                    hasher.update(name.as_bytes()).update(&[0]).update(key);
                }
                out.push((*hasher.finalize().as_bytes(), 1));
            },
        )
        .map(|(stage, digest)| Change::Members(stage, digest));
    scenes
        .map(|(_, (name, key))| Change::Scene(name, key))
        .concat(per_scene)
        .concat(members)
}

/// Watches until `keep_going` returns false, calling it after every round that ran (or could
/// not, once per distinct error) and once per idle poll with `None`.
pub fn watch(
    file: &Path,
    registry: &Registry,
    interval: Duration,
    options: impl Fn(&Pipeline) -> RunOptions,
    mut keep_going: impl FnMut(Option<Round>) -> bool,
) {
    let mut flow = SceneFlow::new();
    let mut fed: Option<Snapshot> = None;
    // The pipeline file of the last successful run; forgotten when a run fails, so it is retried.
    let mut ran: Option<blake3::Hash> = None;
    let mut last_scan: Option<Snapshot> = None;
    let mut last_error: Option<String> = None;
    loop {
        let scan_started = Instant::now();
        let scanned = scan(file, registry);
        let scan_time = scan_started.elapsed();
        let settled = matches!((&scanned, &last_scan), (Ok(now), Some(before)) if now == before);
        last_scan = scanned.as_ref().ok().cloned();
        let result = match scanned {
            Ok(now) if settled && (fed.as_ref() != Some(&now) || ran != Some(now.pipeline)) => {
                let started = Instant::now();
                let changes = flow.round(&now);
                let mut times = RoundTimes {
                    scan: scan_time,
                    changes: started.elapsed(),
                    ..RoundTimes::default()
                };
                let pipeline = now.pipeline;
                fed = Some(now);
                if changes.is_empty() && ran == Some(pipeline) {
                    Ok(None)
                } else {
                    ran = None;
                    let opened = Instant::now();
                    Session::open(file, registry).and_then(|session| {
                        times.planning = opened.elapsed();
                        let started = Instant::now();
                        let report = session.run(options(&session.pipeline))?;
                        times.run = started.elapsed();
                        ran = Some(pipeline);
                        Ok(Some(Round::Ran {
                            changes,
                            report: Box::new(report),
                            work_dir: session.pipeline.work_dir.clone(),
                            rejected: session.rejected.clone(),
                            times,
                        }))
                    })
                }
            }
            Ok(_) => Ok(None),
            Err(error) => Err(error),
        };
        let round = match result {
            Ok(None) => None,
            Ok(round) => {
                last_error = None;
                round
            }
            Err(error) => {
                let message = format!("{error:#}");
                let new = last_error.as_ref() != Some(&message);
                last_error = Some(message.clone());
                new.then_some(Round::Invalid(message))
            }
        };
        if !keep_going(round) {
            return;
        }
        std::thread::sleep(interval);
    }
}

/// The pipeline file's hash, the scene collection and the stages' roles; fails when the
/// pipeline is invalid.
fn scan(file: &Path, registry: &Registry) -> anyhow::Result<Snapshot> {
    let text = std::fs::read(file)?;
    let pipeline = Pipeline::load(file, registry)?;
    // Rejected folders are reported when a round opens its session.
    let hashes = crate::file_hashes::FileHashes::open(&pipeline.work_dir, false);
    let collected = crate::scenes::collect(&pipeline.sources, &hashes)?;
    hashes.save();
    let scenes = collected
        .scenes
        .into_iter()
        .map(|s| (s.role, (s.name, s.key.0)))
        .collect();
    let stages = pipeline
        .stages
        .iter()
        .flat_map(|node| {
            let global = node.scope() == Scope::Global;
            node.roles
                .iter()
                .map(move |role| (role.clone(), (node.id.clone(), global)))
        })
        .collect();
    Ok(Snapshot {
        pipeline: blake3::hash(&text),
        scenes,
        stages,
    })
}
