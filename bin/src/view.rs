//! `lrf-flow view`: a local web viewer for a fitted field in a pipeline's store. It serves one page on
//! 127.0.0.1; the page asks for frames at the camera the user drags, scrolls and keys to. A latent field
//! answers twice per camera: a false-colour preview of the latent render at once, then the decoded image.
//! A decode whose camera is no longer the newest is dropped before it starts (HTTP 409), so dragging
//! never queues stale work.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use glam::{DMat3, DVec3};
use lrf_formats::Camera;
use lrf_formats::image::encode_png;
use lrf_formats::scene::Split;
use lrf_formats::views::{Points, ViewSet};
use lrf_graph::Session;
use lrf_stages::frames::{DecodePrecision, DecoderSource, FieldFrames, RawFrame};
use lrf_stages::latents::side_by_side;
use tch::Tensor;

use crate::print;

/// Serve a fitted field of a pipeline's store in the browser: drag to orbit, scroll to zoom, WASD/QE to move.
///
/// Example: `lrf-flow view pipelines/demo.yaml --scene synth-000 --stage fit`, then open the printed
/// address. Latent fields show the latent render at once (channels 0–2 as false colour) and the decoded
/// image when it is ready.
#[derive(Args)]
pub struct ViewArgs {
    /// Pipeline file (YAML) whose store holds the field.
    pipeline: PathBuf,
    /// Scene name (as `lrf-flow plan` and the run report list them).
    #[arg(long)]
    scene: String,
    /// Stage id of the field (a latent-3dgs-fit, latent-nerf-fit, rgb-3dgs-fit or rgb-align stage); default: the first stage
    /// with a stored field for the scene.
    #[arg(long)]
    stage: Option<String>,
    /// Port on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 7007)]
    port: u16,
    /// Number format of the decode: `auto` is bf16 where the CPU has native bf16 dot products (AVX-512
    /// BF16; about twice as fast, about 53 dB PSNR from an f32 decode), else f32.
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    decode_precision: Precision,
    /// Stop after this many requests (for scripts and tests).
    #[arg(long, hide = true)]
    max_requests: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    Auto,
    F32,
    Bf16,
}

impl Precision {
    fn resolve(self) -> DecodePrecision {
        match self {
            Precision::Auto => DecodePrecision::fastest(),
            Precision::F32 => DecodePrecision::F32,
            Precision::Bf16 => DecodePrecision::Bf16,
        }
    }
}

/// What the server holds: the field behind a lock, and the decoder on a thread of its own (models are not
/// `Send`), so a preview never waits for a decode.
struct Viewer {
    field: Mutex<FieldFrames>,
    decoder: Option<Mutex<mpsc::Sender<DecodeJob>>>,
    info: serde_json::Value,
    newest: AtomicU64,
}

/// A latent frame to decode, unless a newer camera than `id` has arrived by the time its turn comes.
struct DecodeJob {
    id: u64,
    frame: RawFrame,
    reply: mpsc::Sender<anyhow::Result<Option<Tensor>>>,
}

/// The decode thread: owns the model, drops stale jobs.
fn decode_thread(
    source: DecoderSource,
    precision: DecodePrecision,
    newest: Arc<Viewer>,
    jobs: mpsc::Receiver<DecodeJob>,
    ready: mpsc::Sender<anyhow::Result<()>>,
) {
    let decoder = match source.open(precision) {
        Ok(decoder) => {
            let _ = ready.send(Ok(()));
            decoder
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    for job in jobs {
        let result = if newest.newest.load(Ordering::SeqCst) > job.id {
            Ok(None)
        } else {
            decoder.decode(&job.frame).map(Some)
        };
        let _ = job.reply.send(result);
    }
}

pub fn run(args: ViewArgs) -> anyhow::Result<()> {
    let session = Session::open(&args.pipeline, &crate::flow::registry())?;
    let scene = session
        .plan
        .scenes
        .iter()
        .position(|s| s.name == args.scene)
        .with_context(|| {
            let names: Vec<&str> = session.plan.scenes.iter().map(|s| s.name.as_str()).collect();
            format!(
                "no scene {:?} in {}; its scenes: {}",
                args.scene,
                args.pipeline.display(),
                names.join(", ")
            )
        })?;
    // Every stage with a `field` output, and whether its artifact for this scene is stored.
    let mut candidates = Vec::new();
    for (index, node) in session.pipeline.stages.iter().enumerate() {
        let Some(port) = node.signature.outputs.iter().find(|p| p.ty == "field") else {
            continue;
        };
        let Some(instance) = session.plan.stages[index].instance(Some(scene)) else {
            continue;
        };
        let stored = session.store.contains(&instance.key);
        candidates.push((node.id.clone(), port.name.clone(), instance.clone(), stored));
    }
    let listing = || {
        candidates
            .iter()
            .map(|(id, _, _, stored)| format!("{id} ({})", if *stored { "stored" } else { "not computed yet" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match &args.stage {
        Some(id) => candidates.iter().find(|c| &c.0 == id).with_context(|| {
            format!(
                "no field stage {id:?} for scene {:?}; field stages: {}",
                args.scene,
                listing()
            )
        })?,
        None => candidates.iter().find(|c| c.3).with_context(|| {
            format!(
                "no stored field for scene {:?}; field stages: {}",
                args.scene,
                listing()
            )
        })?,
    };
    let (id, port, instance, stored) = chosen;
    if !stored {
        bail!(
            "stage {id} has not computed scene {:?} yet: run `lrf-flow run {}` first",
            args.scene,
            args.pipeline.display()
        );
    }
    let field_dir = session.store.path(&instance.key).join(port);
    let views_dir = instance
        .inputs
        .iter()
        .find(|(p, _)| p == "views")
        .and_then(|(_, sources)| sources.first())
        .map(|s| s.path.clone())
        .context("the field stage has no `views` input")?;
    let (field, decoder) = FieldFrames::open(&field_dir, None)?;
    let views = ViewSet::read(&views_dir)?;
    let start = views
        .views
        .iter()
        .find(|v| v.split == Split::Train)
        .or(views.views.first())
        .context("the scene has no views")?
        .camera
        .clone();
    let points = Points::read(&views_dir).map(|p| p.positions).unwrap_or_default();
    let target = if points.is_empty() {
        start.center() + start.rotation.row(2) * 3.0
    } else {
        let n = points.len() as f64;
        points.iter().fold(DVec3::ZERO, |a, p| a + DVec3::from_array(*p)) / n
    };
    let to_world = start.rotation.transpose();
    let rotation_rows = [0, 1, 2].map(|r| to_world.row(r).to_array());
    let precision = args.decode_precision.resolve();
    let info = serde_json::json!({
        "scene": args.scene,
        "decode_precision": decoder.is_some().then(|| precision.name()),
        "stage": id,
        "latent": decoder.is_some(),
        "width": start.width / field.factor() * field.factor(),
        "height": start.height / field.factor() * field.factor(),
        "fx": start.fx,
        "fy": start.fy,
        "position": start.center().to_array(),
        "rotation": rotation_rows,
        "target": target.to_array(),
    });
    let (jobs, receiver) = mpsc::channel();
    let viewer = Arc::new(Viewer {
        field: Mutex::new(field),
        decoder: decoder.is_some().then(|| Mutex::new(jobs)),
        info,
        newest: AtomicU64::new(0),
    });
    if let Some(source) = decoder {
        let (ready, started) = mpsc::channel();
        let shared = viewer.clone();
        std::thread::spawn(move || decode_thread(source, precision, shared, receiver, ready));
        started.recv().context("the decode thread stopped")??;
    }
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .with_context(|| format!("listening on 127.0.0.1:{} (choose another with --port)", args.port))?;
    print(&format!(
        "viewing {id} on {}: http://{}/ (Ctrl-C to stop)\n",
        args.scene,
        listener.local_addr()?
    ))?;
    let mut served = 0;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let viewer = viewer.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(&viewer, stream) {
                tracing::debug!("viewer request: {e:#}");
            }
        });
        served += 1;
        if args.max_requests.is_some_and(|m| served >= m) {
            // Let the last responses finish.
            std::thread::sleep(Duration::from_millis(500));
            break;
        }
    }
    Ok(())
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, headers: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)
}

fn serve(viewer: &Viewer, mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    {
        let mut reader = BufReader::new(&stream);
        reader.read_line(&mut line)?;
        // The rest of the request head is read too: a socket closed with bytes unread is reset, and the
        // client then loses the response.
        let mut header = String::new();
        while reader.read_line(&mut header)? > 0 && !header.trim().is_empty() {
            header.clear();
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (route, query) = target.split_once('?').unwrap_or((&target, ""));
    let query: HashMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    match route {
        "/" => respond(&mut stream, "200 OK", "text/html; charset=utf-8", "", PAGE.as_bytes())?,
        "/info" => respond(
            &mut stream,
            "200 OK",
            "application/json",
            "",
            viewer.info.to_string().as_bytes(),
        )?,
        "/frame" => match frame(viewer, &query) {
            Ok(Some((png, ms))) => respond(
                &mut stream,
                "200 OK",
                "image/png",
                &format!("X-Frame-Ms: {ms:.1}\r\n"),
                &png,
            )?,
            Ok(None) => respond(
                &mut stream,
                "409 Conflict",
                "text/plain",
                "",
                b"a newer camera replaced this one",
            )?,
            Err(e) => respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "",
                format!("{e:#}").as_bytes(),
            )?,
        },
        _ => respond(&mut stream, "404 Not Found", "text/plain", "", b"not found")?,
    }
    Ok(())
}

/// Renders the camera in `query` (`id`, `mode` = preview | decoded, `p` = position x,y,z, `r` = nine
/// camera-to-world rotation entries by rows, `fx`, `fy`, `w`, `h`); `None` for a stale decode.
fn frame(viewer: &Viewer, query: &HashMap<&str, &str>) -> anyhow::Result<Option<(Vec<u8>, f64)>> {
    let numbers = |key: &str| -> anyhow::Result<Vec<f64>> {
        let text = query.get(key).with_context(|| format!("missing `{key}`"))?;
        let values: Vec<f64> = text.split(',').map(str::parse).collect::<Result<_, _>>()?;
        anyhow::ensure!(
            values.iter().all(|v| v.is_finite()),
            "`{key}` holds a non-finite number"
        );
        Ok(values)
    };
    let id = numbers("id")?[0] as u64;
    let decoded = query.get("mode") == Some(&"decoded");
    viewer.newest.fetch_max(id, Ordering::SeqCst);
    let p = numbers("p")?;
    let r = numbers("r")?;
    let (fx, fy, w, h) = (numbers("fx")?[0], numbers("fy")?[0], numbers("w")?[0], numbers("h")?[0]);
    anyhow::ensure!(p.len() == 3 && r.len() == 9, "`p` needs 3 numbers and `r` 9");
    anyhow::ensure!(
        (16.0..=4096.0).contains(&w) && (16.0..=4096.0).contains(&h),
        "frame size {w}x{h} out of range"
    );
    let to_world = DMat3::from_cols_array(&[r[0], r[3], r[6], r[1], r[4], r[7], r[2], r[5], r[8]]);
    let rotation = to_world.transpose();
    let position = DVec3::new(p[0], p[1], p[2]);
    let camera = Camera {
        rotation,
        translation: -(rotation * position),
        fx,
        fy,
        cx: w / 2.0,
        cy: h / 2.0,
        width: w as u32,
        height: h as u32,
    };
    let started = Instant::now();
    let raw = viewer.field.lock().unwrap_or_else(|e| e.into_inner()).render(&camera)?;
    let image = match (&viewer.decoder, decoded) {
        (Some(jobs), true) => {
            let (reply, answer) = mpsc::channel();
            let job = DecodeJob { id, frame: raw, reply };
            jobs.lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(job)
                .ok()
                .context("the decode thread stopped")?;
            match answer.recv().context("the decode thread stopped")?? {
                Some(image) => image,
                None => return Ok(None),
            }
        }
        _ => raw.preview(),
    };
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let png = encode_png(std::path::Path::new("frame.png"), &side_by_side(&[&image])?)?;
    Ok(Some((png, ms)))
}

/// The viewer page: no network, one canvas-free `<img>`, pointer/wheel/key controls.
const PAGE: &str = include_str!("view.html");
