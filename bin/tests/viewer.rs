//! `lrf-flow view` on a small fitted latent field: the HTTP answers (page, info, preview and decoded frames,
//! a stale decode refused, bad requests), helpful errors for a wrong scene or stage, and, where Chromium
//! and ChromeDriver are installed, a real browser that drags the view and gets a new decoded frame.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lrf-flow");

const PIPELINE: &str = "\
pipeline: view
work_dir: work
workers: 1
scenes:
  - generate: synth
    params: {scenes: 1, views: 9, size: 128x96, seed: 3, points: 400}
    role: eval
stages:
  - {id: ingest, kind: colmap-ingest, inputs: {scene: scenes}}
  - {id: encode, kind: vae-encode, inputs: {views: ingest}}
  - id: fit
    kind: latent-3dgs-fit
    inputs: {views: ingest, latents: encode}
    params: {train: {iterations: 40, densify_from: 10, densify_until: 30, densify_interval: 10}}
";

/// A project with the field fitted (not `fit-later`), and its scene's name.
fn project() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        PIPELINE.replace("  - id: fit-later", "  - id: unused"),
    )
    .unwrap();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let output = Command::new(BIN)
        .args(["run", "p.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let scenes = std::fs::read_dir(dir.path().join("work/scenes/"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let scene = std::fs::read_dir(scenes).unwrap().next().unwrap().unwrap().file_name();
    (dir, scene.to_string_lossy().into_owned())
}

/// `lrf-flow view` on a free port; returns the process and its address.
fn serve(dir: &Path, scene: &str, max_requests: usize) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["view", "p.yaml", "--scene", scene, "--stage", "fit", "--port", "0"])
        .args(["--max-requests", &max_requests.to_string()])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, address)
}

/// One HTTP GET: status, headers, body. The headers follow the request line after a pause, as a slow
/// client's may: the server must read them before it answers and closes.
fn get(address: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\n").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stream
        .write_all(format!("Host: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, response[split + 4..].to_vec())
}

fn frame_query(info: &serde_json::Value, id: u64, mode: &str) -> String {
    let numbers = |v: &serde_json::Value| -> Vec<String> {
        let flat: Vec<f64> = match v.as_array().unwrap()[0].as_array() {
            Some(_) => v
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect(),
            None => v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect(),
        };
        flat.iter().map(f64::to_string).collect()
    };
    format!(
        "/frame?id={id}&mode={mode}&p={}&r={}&fx={}&fy={}&w={}&h={}",
        numbers(&info["position"]).join(","),
        numbers(&info["rotation"]).join(","),
        info["fx"],
        info["fy"],
        info["width"],
        info["height"]
    )
}

#[test]
fn the_viewer_answers_previews_decodes_and_refuses_stale_and_bad_requests() {
    let (dir, scene) = project();
    let (mut child, address) = serve(dir.path(), &scene, 7);
    let (status, _, page) = get(&address, "/");
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("<img id=\"frame\"") && !page.contains("http://") && !page.contains("https://"));
    let (_, _, info) = get(&address, "/info");
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(info["latent"], true, "{info}");
    assert!(
        ["f32", "bf16"].contains(&info["decode_precision"].as_str().unwrap_or_default()),
        "{info}"
    );
    let (status, head, preview) = get(&address, &frame_query(&info, 1, "preview"));
    assert_eq!(status, 200, "{head}");
    assert!(
        preview.starts_with(b"\x89PNG") && head.contains("X-Frame-Ms:"),
        "{head}"
    );
    let (status, _, decoded) = get(&address, &frame_query(&info, 2, "decoded"));
    assert_eq!(status, 200);
    assert!(
        decoded.starts_with(b"\x89PNG") && decoded != preview,
        "the decoded image is not the preview"
    );
    // Camera 5 was asked for: a decode for camera 3 is stale and refused.
    get(&address, &frame_query(&info, 5, "preview"));
    let (status, _, _) = get(&address, &frame_query(&info, 3, "decoded"));
    assert_eq!(status, 409);
    let (status, _, message) = get(&address, "/frame?id=9&mode=preview&p=NaN,0,0");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&message));
    assert!(child.wait().unwrap().success(), "the server stops after --max-requests");
}

#[test]
fn a_wrong_scene_or_stage_is_named_with_what_exists() {
    let (dir, scene) = project();
    let run = |args: &[&str]| {
        let output = Command::new(BIN)
            .arg("view")
            .arg("p.yaml")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let error = run(&["--scene", "nowhere"]);
    assert!(
        error.contains("no scene \"nowhere\"") && error.contains(&scene),
        "{error}"
    );
    let error = run(&["--scene", &scene, "--stage", "encode"]);
    assert!(
        error.contains("no field stage \"encode\"") && error.contains("fit (stored)"),
        "{error}"
    );
}

/// A W3C WebDriver command to ChromeDriver; returns `value`.
fn webdriver(port: u16, method: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let text = body.to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .unwrap();
    // ChromeDriver may keep the connection open: read the head, then Content-Length bytes.
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    json["value"].clone()
}

#[test]
#[ignore = "needs chromium and chromedriver (scripts/setup-debian.sh); make test runs it where both are installed"]
fn dragging_in_chromium_brings_a_new_decoded_frame() {
    let (dir, scene) = project();
    let (mut viewer, address) = serve(dir.path(), &scene, 400);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = dir.path().join("profile");
    let session = webdriver(
        port,
        "POST",
        "/session",
        &serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     format!("--user-data-dir={}", profile.display())]}}}}),
    );
    let id = session["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"))
        .to_string();
    let at = |path: &str| format!("/session/{id}{path}");
    webdriver(
        port,
        "POST",
        &at("/url"),
        &serde_json::json!({"url": format!("http://{address}/")}),
    );
    let state = || {
        let value = webdriver(
            port,
            "POST",
            &at("/execute/sync"),
            &serde_json::json!({"script": "return [document.body.getAttribute('data-decoded-count'), document.body.getAttribute('data-decoded-hash')]", "args": []}),
        );
        (
            value[0].as_str().map(str::to_string),
            value[1].as_str().map(str::to_string),
        )
    };
    // Bounded waits: at most 120 polls of 250 ms each.
    let wait_for = |done: &dyn Fn(&(Option<String>, Option<String>)) -> bool| {
        for _ in 0..120 {
            let s = state();
            if done(&s) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("no decoded frame arrived in 30 s: {:?}", state());
    };
    let first = wait_for(&|s| s.0.is_some() && s.1.is_some());
    let element = webdriver(
        port,
        "POST",
        &at("/element"),
        &serde_json::json!({"using": "css selector", "value": "#frame"}),
    );
    let element_id = element
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.as_str())
        .unwrap()
        .to_string();
    webdriver(
        port,
        "POST",
        &at("/actions"),
        &serde_json::json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
            {"type": "pointerMove", "duration": 0, "origin": {"element-6066-11e4-a52e-4f735466cecf": element_id}, "x": 0, "y": 0},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerMove", "duration": 300, "origin": "pointer", "x": 80, "y": 15},
            {"type": "pointerUp", "button": 0}]}]}),
    );
    let first_count: u32 = first.0.as_deref().unwrap().parse().unwrap();
    let after = wait_for(&|s| {
        s.0.as_deref()
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| c > first_count)
            && s.1 != first.1
    });
    println!("decoded frames: {first:?} then {after:?}");
    webdriver(port, "DELETE", &format!("/session/{id}"), &serde_json::json!({}));
    let _ = driver.kill();
    let _ = viewer.kill();
}
