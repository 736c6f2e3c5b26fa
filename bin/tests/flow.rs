//! `lrf-flow run | plan | gc` end to end with the example exec pipeline, and cluster mode: two
//! processes on localhost store byte-identical artifacts to one process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_lrf-flow");

fn python() -> String {
    // The Makefile sets LRF_PYTHON; without it, the repository's own virtualenv.
    std::env::var("LRF_PYTHON").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").into())
}

/// A temporary project: pipelines/ copied from the repository, and three tiny scene folders.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipelines = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    std::fs::create_dir_all(dir.path().join("pipelines/stages")).expect("dirs");
    for file in ["example-exec.yaml", "stages/scene_stats.py", "stages/corpus_summary.py"] {
        std::fs::copy(pipelines.join(file), dir.path().join("pipelines").join(file)).expect("copy");
    }
    for i in 0..3 {
        add_scene(dir.path(), &format!("scene{i:03}"));
    }
    dir
}

fn add_scene(root: &Path, name: &str) {
    let images = root.join("work/synth").join(name).join("images");
    std::fs::create_dir_all(&images).expect("scene");
    std::fs::write(images.join("0.png"), name.repeat(10)).expect("image");
}

fn lrf_flow(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("LRF_PYTHON", python())
        .output()
        .expect("run lrf-flow")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const PIPELINE: &str = "pipelines/example-exec.yaml";

#[test]
fn plan_run_rerun_and_gc() {
    let dir = project();
    let plan = stdout(&lrf_flow(dir.path(), &["plan", PIPELINE]));
    assert!(plan.contains("total: 0 cached, 4 to compute"), "{plan}");
    let run = stdout(&lrf_flow(dir.path(), &["run", PIPELINE, "-w", "2"]));
    assert!(run.contains("stats           3       0       0        0"), "{run}");
    let again = stdout(&lrf_flow(dir.path(), &["run", PIPELINE]));
    assert!(again.contains("stats           0       3       0        0"), "{again}");
    assert!(dir.path().join("work/example-exec/reports/latest.json").is_file());

    add_scene(dir.path(), "scene003");
    let plan = stdout(&lrf_flow(dir.path(), &["plan", PIPELINE]));
    assert!(plan.contains("total: 3 cached, 2 to compute"), "{plan}");
    stdout(&lrf_flow(dir.path(), &["run", PIPELINE]));
    let dry = stdout(&lrf_flow(dir.path(), &["gc", PIPELINE, "--dry-run"]));
    let lines: Vec<&str> = dry.lines().collect();
    assert!(lines[0].starts_with("1 unreferenced artifact(s),"), "{dry}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row[..2],
        ["summary", "(global)"],
        "stage and scene of the summary over 3 scenes: {dry}"
    );
    assert_eq!(row[3], "MiB", "{dry}");
    let gc = stdout(&lrf_flow(dir.path(), &["gc", PIPELINE]));
    assert!(
        gc.starts_with("removed 1 artifact(s)"),
        "the summary over 3 scenes: {gc}"
    );
}

#[test]
fn a_report_folder_that_cannot_be_written_hides_nothing() {
    let dir = project();
    let work = dir.path().join("work/example-exec");
    std::fs::create_dir_all(&work).expect("work dir");
    // A file where the reports folder goes (permissions would not stop root).
    std::fs::write(work.join("reports"), b"not a folder").expect("file");
    let output = lrf_flow(dir.path(), &["run", PIPELINE]);
    assert!(!output.status.success());
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        out.contains("stats           3       0       0        0"),
        "the summary comes first: {out}"
    );
    assert!(
        err.contains("work/example-exec/reports: File exists"),
        "the error names the path: {err}"
    );
}

#[test]
fn a_failing_stage_gives_a_non_zero_exit_after_the_other_scenes_ran() {
    let dir = project();
    std::fs::write(dir.path().join("work/synth/scene001/images/broken"), [0xff]).expect("file");
    let script = dir.path().join("pipelines/stages/scene_stats.py");
    let text = std::fs::read_to_string(&script).expect("script");
    std::fs::write(
        &script,
        text.replace(
            "stats = {",
            "assert not (scene / 'images/broken').exists(), 'broken scene'\nstats = {",
        ),
    )
    .expect("script");
    let output = lrf_flow(dir.path(), &["run", PIPELINE]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("stats           2       0       1        0"), "{text}");
    assert!(text.contains("FAILED stats on scene001"), "{text}");
    assert!(text.contains("AssertionError: broken scene"), "{text}");
    assert!(
        text.contains("skipped summary: input from stats on scene001 failed"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 stage instance(s) failed or were skipped"));
}

#[test]
fn validation_errors_point_at_the_line() {
    let dir = project();
    let file = dir.path().join(PIPELINE);
    let text = std::fs::read_to_string(&file).expect("pipeline");
    std::fs::write(
        &file,
        text.replace(
            "kind: exec\n    inputs: {stats: stats}",
            "kind: exce\n    inputs: {stats: stats}",
        ),
    )
    .expect("pipeline");
    let output = lrf_flow(dir.path(), &["plan", PIPELINE]);
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("example-exec.yaml:24:11: stage `summary`: unknown stage kind `exce`; known kinds:"),
        "{error}"
    );
    assert!(error.contains(", exec, "), "the known kinds should list exec: {error}");
}

/// Two free loopback ports (bound then released).
fn free_ports() -> [u16; 2] {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    [
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    ]
}

/// Every stored file under the store, relative path → bytes (manifests without their timings).
fn store_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let store = dir.join("work/example-exec/store");
    let mut files = Vec::new();
    let mut stack = vec![store.clone()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n == ".tmp" || n == ".lock") {
                continue;
            } else if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "manifest.json") {
                let mut manifest: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
                manifest["started"] = 0.into();
                manifest["seconds"] = 0.into();
                files.push((
                    path.strip_prefix(&store).expect("inside").to_owned(),
                    manifest.to_string().into_bytes(),
                ));
            } else {
                files.push((
                    path.strip_prefix(&store).expect("inside").to_owned(),
                    std::fs::read(&path).expect("read"),
                ));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn two_processes_store_the_same_artifacts_as_one() {
    let single = project();
    stdout(&lrf_flow(single.path(), &["run", PIPELINE, "-w", "1"]));

    let cluster = project();
    let ports = free_ports();
    let hosts = cluster.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).expect("hostfile");
    let hosts = hosts.to_string_lossy().into_owned();
    let children: Vec<_> = (0..2)
        .map(|p| {
            let process = p.to_string();
            let args = [
                "run",
                PIPELINE,
                "-w",
                "2",
                "--processes",
                "2",
                "--process",
                &process,
                "--hostfile",
                &hosts,
            ];
            Command::new(BIN)
                .args(args)
                .args(["--startup-timeout", "30"])
                .current_dir(cluster.path())
                .env("LRF_PYTHON", python())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    // Process 1 reports the instances its workers ran; process 0 every process's, each instance once.
    let mut computed = [[0; 2]; 2];
    for (process, child) in children.into_iter().enumerate() {
        let text = stdout(&child.wait_with_output().expect("wait"));
        for (i, stage) in ["stats", "summary"].iter().enumerate() {
            let row = text
                .lines()
                .find(|l| l.trim_start().starts_with(stage))
                .expect("stage row");
            computed[process][i] = row
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<usize>().ok())
                .expect("count");
        }
        assert_eq!(
            text.contains("process 0 reports the whole run"),
            process == 1,
            "process {process}: {text}"
        );
    }
    assert_eq!(computed[0], [3, 1], "process 0's report misses instances of process 1");
    assert!(computed[1][0] <= 3 && computed[1][1] <= 1, "{computed:?}");
    let latest = std::fs::read_to_string(cluster.path().join("work/example-exec/reports/latest.json"))
        .expect("process 0's report");
    let latest: serde_json::Value = serde_json::from_str(&latest).expect("json");
    assert_eq!(latest["outcomes"].as_array().expect("outcomes").len(), 4, "{latest}");
    let computed = [computed[0][0], computed[0][1]];
    assert_eq!(computed, [3, 1]);
    let expected = store_contents(single.path());
    assert_eq!(expected.len(), 4 * 2, "4 artifacts, each an output and a manifest");
    assert_eq!(store_contents(cluster.path()), expected);
}

#[test]
fn a_missing_peer_times_out_with_a_clear_message() {
    let dir = project();
    let ports = free_ports();
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).expect("hostfile");
    let started = std::time::Instant::now();
    let hosts = hosts.to_string_lossy().into_owned();
    let args = [
        "run",
        PIPELINE,
        "--processes",
        "2",
        "--process",
        "0",
        "--hostfile",
        &hosts,
        "--startup-timeout",
        "2",
    ];
    let output = lrf_flow(dir.path(), &args);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("cluster start-up timed out after 2 s: process 0 could not connect"),
        "{error}"
    );
}

/// A process that dies mid-run (killed) makes the other stop with a message, not hang; a rerun resumes.
#[test]
fn a_process_that_dies_stops_the_other_with_a_message() {
    let dir = project();
    std::fs::write(
        dir.path().join("pipelines/slow.yaml"),
        "pipeline: slow\nwork_dir: ../work/slow\nscenes:\n  - {glob: ../work/synth/scene*, role: train}\nstages:\n  \
         - id: wait\n    kind: exec\n    inputs: {scene: scenes}\n    params: {command: [sh, -c, 'sleep 6', sh], scope: per-scene, \
         input_ports: {scene: scene}, output_ports: {done: json}}\n",
    )
    .expect("pipeline");
    let ports = free_ports();
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).expect("hostfile");
    let hosts = hosts.to_string_lossy().into_owned();
    let spawn = |process: &str| {
        Command::new(BIN)
            .args([
                "run",
                "pipelines/slow.yaml",
                "-w",
                "1",
                "--processes",
                "2",
                "--process",
                process,
            ])
            .args(["--hostfile", &hosts, "--startup-timeout", "30"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (survivor, mut victim) = (spawn("0"), spawn("1"));
    std::thread::sleep(Duration::from_secs(3));
    victim.kill().expect("kill");
    let _ = victim.wait();
    let started = std::time::Instant::now();
    let output = survivor.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the surviving process stopped by itself"
    );
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{error}");
    assert!(
        error.contains("process 0 lost its connection to another process"),
        "{error}"
    );
}

/// Lines of a child's stdout, read on a thread, waited for with a deadline.
fn wait_for(lines: &std::sync::mpsc::Receiver<String>, wanted: &str, seen: &mut String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(wanted) {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!("watch never printed {wanted:?}; it printed:\n{seen}");
}

#[test]
fn watch_runs_the_new_scene_when_a_folder_appears() {
    use std::io::BufRead;
    let dir = project();
    let mut child = Command::new(BIN)
        .args(["watch", PIPELINE, "--interval", "0.1"])
        .current_dir(dir.path())
        .env("LRF_PYTHON", python())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    wait_for(&lines, "scenes: 3 added, 0 removed, 0 changed", &mut seen);
    wait_for(&lines, "summary         1       0", &mut seen);
    add_scene(dir.path(), "scene003");
    wait_for(&lines, "scenes: 1 added, 0 removed, 0 changed", &mut seen);
    wait_for(&lines, "stats           1       3", &mut seen);
    child.kill().expect("stop watching");
    child.wait().expect("reap");
}
