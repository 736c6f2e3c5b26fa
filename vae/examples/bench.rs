//! Encode/decode throughput of TAEF2 and the SD-architecture AutoencoderKL (random weights) against
//! the same models in PyTorch (benches/reference.py: the TAESD reference code and diffusers), in one
//! run with the same thread count, and the peak memory of a tiled 2048² decode.
//!
//!     cargo run -p lrf-vae --example bench [THREADS (default 2)] [REPS (default 3)]
//!
//! Batch 1, inference mode. The two sides alternate run by run, so both see the same machine load;
//! each figure is the best of REPS runs after a warm-up.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use lrf_vae::{Autoencoder, AutoencoderKL, KlConfig, TilePlan, TinyAutoencoder, decode_tiled};
use tch::{Device, Kind, Tensor};

const SIZES: [i64; 2] = [256, 512];
const TILED_SIDE: i64 = 2048;

fn seconds(f: impl FnOnce() -> Tensor) -> f64 {
    let start = Instant::now();
    let _ = f();
    start.elapsed().as_secs_f64()
}

/// The process's peak resident memory in MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.map_or(f64::NAN, |k| k / 1024.0)
}

/// Child-process mode: decode one 2048² image from TAEF2 latents, tiled or not, and print the peak RSS.
fn measure_decode_memory(tiled: bool) {
    let model = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    let latent = Tensor::randn([1, 32, TILED_SIDE / 8, TILED_SIDE / 8], (Kind::Float, Device::Cpu));
    let baseline = peak_rss_mib();
    let _guard = tch::no_grad_guard();
    let secs = seconds(|| {
        if tiled {
            decode_tiled(&model, &latent, TilePlan::default()).unwrap()
        } else {
            model.decode(&latent).unwrap()
        }
    });
    println!("{:.0} {:.0} {:.1}", peak_rss_mib(), baseline, secs);
}

/// The PyTorch reference, answering one timed run per request.
struct Reference {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Reference {
    fn start(threads: i32) -> Self {
        let python = std::env::var_os("LRF_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(threads.to_string())
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the PyTorch reference");
        let (stdin, stdout) = (
            child.stdin.take().unwrap(),
            BufReader::new(child.stdout.take().unwrap()),
        );
        let mut reference = Reference { child, stdin, stdout };
        assert_eq!(
            reference.line(),
            "ready",
            "the reference failed to start (see its stderr above)"
        );
        reference
    }

    /// Closes the reference's input, which ends it, and waits for it.
    fn finish(self) {
        let Reference { mut child, stdin, .. } = self;
        drop(stdin);
        child.wait().expect("the PyTorch reference exits");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn seconds(&mut self, request: &str) -> f64 {
        writeln!(self.stdin, "{request}").unwrap();
        self.line().parse().expect("seconds from the reference")
    }
}

fn main() {
    // As the lrf-flow binary does; PyTorch runs with glibc's defaults (the same MALLOC_* environment
    // settings would speed it up too).
    let retained = lrf_vae::retain_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--decode-memory") {
        tch::set_num_threads(args[3].parse().unwrap());
        return measure_decode_memory(args[2] == "tiled");
    }
    let threads: i32 = args.get(1).map_or(2, |a| a.parse().expect("THREADS"));
    let reps: usize = args.get(2).map_or(3, |a| a.parse().expect("REPS"));
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let mut reference = Reference::start(threads);
    let _guard = tch::no_grad_guard();
    let taef2 = TinyAutoencoder::taef2(Device::Cpu).unwrap();
    let kl = AutoencoderKL::new(KlConfig::sd_kl_f8(4), Device::Cpu).unwrap();
    // Each model with the PyTorch variants it is timed against (benches/reference.py's names): TAEF2 runs
    // channels-last here, so PyTorch is timed both as the reference code runs it and channels-last.
    let models: [(&dyn Autoencoder, &[&str]); 2] = [(&taef2, &["taef2", "taef2-channels-last"]), (&kl, &["sd-kl-f8"])];

    println!("threads {threads}, best of {reps} alternating runs, batch 1, images/s (higher is better)");
    println!("lrf-vae keeps freed memory for reuse (retain_freed_memory): {retained}");
    println!("{:<26} {:>10} {:>10} {:>8}", "", "lrf-vae", "PyTorch", "ratio");
    for size in SIZES {
        for (model, variants) in models {
            for op in ["encode", "decode"] {
                let input = if op == "encode" {
                    Tensor::rand([1, 3, size, size], (Kind::Float, Device::Cpu))
                } else {
                    Tensor::randn(
                        [1, model.latent_channels(), size / 8, size / 8],
                        (Kind::Float, Device::Cpu),
                    )
                };
                let run = || {
                    if op == "encode" {
                        model.encode(&input).unwrap().mean
                    } else {
                        model.decode(&input).unwrap()
                    }
                };
                seconds(run);
                let mut ours = f64::INFINITY;
                let mut theirs = vec![f64::INFINITY; variants.len()];
                for _ in 0..reps {
                    ours = ours.min(seconds(run));
                    for (best, variant) in theirs.iter_mut().zip(variants) {
                        *best = best.min(reference.seconds(&format!("{variant} {op} {size}")));
                    }
                }
                for (variant, theirs) in variants.iter().zip(theirs) {
                    println!(
                        "{:<26} {:>10.3} {:>10.3} {:>8.3}",
                        format!("{variant} {op} {size}"),
                        1.0 / ours,
                        1.0 / theirs,
                        theirs / ours
                    );
                }
            }
        }
    }
    reference.finish();
    let exe = std::env::current_exe().unwrap();
    for mode in ["tiled", "plain"] {
        let out = Command::new(&exe)
            .args(["--decode-memory", mode, &threads.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            [peak, base, secs] => {
                println!(
                    "TAEF2 {mode} decode {TILED_SIDE}²: peak RSS {peak} MiB ({base} MiB before decoding), {secs} s"
                )
            }
            _ => println!(
                "TAEF2 {mode} decode {TILED_SIDE}²: failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }
}
