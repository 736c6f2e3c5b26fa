//! The HTML report a person opens: `index.html`, static and self-contained (inline CSS and SVG plots,
//! images copied beside it, no network). The `summary` stage writes it; `lrf-flow run` publishes the last
//! one at `work/<pipeline>/report/latest/` with the run's stage timings (`run.html`).

pub mod plot;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use lrf_formats::atomic::write_atomic;
use lrf_formats::scene::Split;
use lrf_graph::report::{RunReport, Status};
use lrf_vae::metrics::MetricValue;

use crate::artifacts::{Evaluation, SIDE_BY_SIDE_PANELS, Scores};
use plot::{Bar, BarChart, LineChart, Series, escape};

/// The report's page, in the summary artifact and in `report/latest/`.
pub const INDEX_FILE: &str = "index.html";
/// The last run's stage timings, beside the published index.
pub const RUN_FILE: &str = "run.html";
/// Test views per method and scene whose side-by-sides the report shows.
const IMAGES_PER_ROW: usize = 4;

/// One scene's rendered camera path (a `render-path` artifact).
pub struct VideoRow<'a> {
    pub name: &'a str,
    pub scene: &'a str,
    pub dir: &'a Path,
}

/// One method on one scene: its evaluation and side-by-side folder, or the stage that failed.
pub struct ReportRow<'a> {
    pub method: &'a str,
    pub scene: &'a str,
    pub result: Result<(&'a Evaluation, &'a Path), &'a str>,
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3}td.name{text-align:left}tr.failed td{color:#b00}details{margin:0.2em 0 1em 0}\
figure{margin:1em 0}video{max-width:100%}figcaption{font-size:0.9em;color:#444}img{max-width:100%;display:block}\
.labels{display:flex}.labels span{flex:1;text-align:center;font-size:0.85em;color:#444}\
.better{color:#070}.worse{color:#b00}.plots{display:flex;flex-wrap:wrap;gap:1em}";

/// A complete page: the report's style, and a load-time self-check (counts of tables, plots, images and
/// broken images in `body[data-check]`), which the browser test reads.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head>\
         <body><h1>{t}</h1>\n{body}\n<script>window.addEventListener('load',function(){{var i=Array.prototype.slice.call(document.images);\
         document.body.setAttribute('data-check',JSON.stringify({{tables:document.querySelectorAll('table').length,\
         plots:document.querySelectorAll('svg').length,images:i.length,broken:i.filter(function(x){{return !(x.complete&&x.naturalWidth>0)}}).length}}));}});</script>\
         </body></html>\n",
        t = escape(title)
    )
}

fn metric(value: MetricValue) -> String {
    match value {
        MetricValue::Value(v) => format!("{v:.4}"),
        MetricValue::Unavailable => "–".into(),
    }
}

fn score_cells(scores: &Scores) -> String {
    format!(
        "<td>{:.2}</td><td>{:.4}</td><td>{}</td><td>{}</td>",
        scores.psnr,
        scores.ssim,
        metric(scores.st_lpips),
        metric(scores.lpips)
    )
}

/// The Gaussian count, or – for fields of other representations.
pub(crate) fn gaussian_count(evaluation: &Evaluation) -> String {
    if evaluation.representation.is_gaussians() {
        evaluation.gaussians.to_string()
    } else {
        "–".into()
    }
}

fn test_summary(evaluation: &Evaluation) -> Option<&crate::artifacts::SplitSummary> {
    evaluation.summary.iter().find(|s| s.split == Split::Test)
}

/// A path component from a method or scene name.
fn file_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `index.html` and its images into `out`.
pub fn write_report(out: &Path, title: &str, rows: &[ReportRow], videos: &[VideoRow]) -> anyhow::Result<()> {
    let mut body = format!(
        "<p>Stage timings of the last run: <a href=\"{RUN_FILE}\">{RUN_FILE}</a> (beside the copy of this page \
         that <code>lrf-flow run</code> publishes in <code>work/&lt;pipeline&gt;/report/latest/</code>).</p>\n"
    );
    let methods: Vec<&str> = rows.iter().fold(Vec::new(), |mut m, r| {
        if !m.contains(&r.method) {
            m.push(r.method);
        }
        m
    });
    metrics_table(&mut body, rows, methods.first().copied());
    fits_table(&mut body, rows);
    plots(&mut body, rows);
    images(&mut body, out, rows)?;
    videos_section(&mut body, out, videos)?;
    write_atomic(&out.join(INDEX_FILE), page(title, &body).as_bytes())
        .with_context(|| format!("writing {}", out.join(INDEX_FILE).display()))?;
    Ok(())
}

/// Method × scene on the test views, with the autoencoder ceiling, the change against the first method
/// (the ablation reading when there are several) and per-view scores on demand.
fn metrics_table(body: &mut String, rows: &[ReportRow], baseline: Option<&str>) {
    body.push_str(
        "<h2>Test views</h2><p>Means over each scene's test views. <em>Autoencoder ceiling</em>: the autoencoder's \
         own reconstruction of the same views, which a latent field cannot pass. Δ PSNR: against the first \
         method on the same scene. Latent PSNR: the normalised latent render against the encoded image (IG-AE's \
         Table 6). ST-LPIPS ships with lrf-flow; LPIPS needs the user's backbone weights \
         (– where not given).</p>\n<table><tr><th rowspan=2>method</th><th rowspan=2>scene</th><th rowspan=2>views</th>\
         <th colspan=6>render</th><th colspan=4>autoencoder ceiling</th></tr><tr><th>PSNR</th><th>Δ PSNR</th>\
         <th>SSIM</th><th>ST-LPIPS</th><th>LPIPS</th><th>latent PSNR</th><th>PSNR</th><th>SSIM</th><th>ST-LPIPS</th>\
         <th>LPIPS</th></tr>\n",
    );
    let baseline_psnr = |scene: &str| {
        rows.iter()
            .filter(|r| Some(r.method) == baseline && r.scene == scene)
            .find_map(|r| r.result.ok().and_then(|(e, _)| test_summary(e)).map(|t| t.render.psnr))
    };
    let mut details = String::new();
    for row in rows {
        let (method, scene) = (escape(row.method), escape(row.scene));
        let evaluation = match row.result {
            Ok((evaluation, _)) => evaluation,
            Err(stage) => {
                let _ = writeln!(
                    body,
                    "<tr class=failed><td class=name>{method}</td><td class=name>{scene}</td>\
                     <td colspan=11>failed: {} failed on this scene</td></tr>",
                    escape(stage)
                );
                continue;
            }
        };
        let Some(test) = test_summary(evaluation) else {
            let _ = writeln!(
                body,
                "<tr><td class=name>{method}</td><td class=name>{scene}</td><td colspan=11>no test views scored</td></tr>"
            );
            continue;
        };
        let delta = match baseline_psnr(row.scene) {
            Some(base) if Some(row.method) != baseline => {
                let d = test.render.psnr - base;
                let class = if d >= 0.0 { "better" } else { "worse" };
                format!("<span class={class}>{d:+.2}</span>")
            }
            _ => "–".into(),
        };
        let ceiling = test
            .reconstruction
            .as_ref()
            .map_or("<td colspan=4>– (RGB field)</td>".into(), score_cells);
        let latent = test.latent_psnr.map_or("–".into(), |p| format!("{p:.2}"));
        let render = score_cells(&test.render).replacen("</td>", &format!("</td><td>{delta}</td>"), 1)
            + &format!("<td>{latent}</td>");
        let _ = writeln!(
            body,
            "<tr><td class=name>{method}</td><td class=name>{scene}</td><td>{}</td>{render}{ceiling}</tr>",
            test.views
        );
        let _ = write!(
            details,
            "<details><summary>{method} / {scene}: per view</summary><table><tr><th>view</th><th>split</th>\
             <th>PSNR</th><th>SSIM</th><th>ST-LPIPS</th><th>LPIPS</th><th>ceiling PSNR</th></tr>"
        );
        for view in &evaluation.views {
            let _ = write!(
                details,
                "<tr><td class=name>{}</td><td class=name>{:?}</td>{}<td>{}</td></tr>",
                escape(&view.name),
                view.split,
                score_cells(&view.render),
                view.reconstruction
                    .as_ref()
                    .map_or("–".into(), |r| format!("{:.2}", r.psnr))
            );
        }
        details.push_str("</table></details>\n");
    }
    body.push_str("</table>\n");
    body.push_str(&details);
}

/// What each fit cost and how large it grew.
fn fits_table(body: &mut String, rows: &[ReportRow]) {
    body.push_str(
        "<h2>Fits</h2><table><tr><th>method</th><th>scene</th><th>field</th><th>Gaussians</th><th>iterations</th>\
         <th>fit s</th><th>s/iteration</th><th>peak memory MiB</th><th>render s/view</th></tr>\n",
    );
    for row in rows {
        let Ok((e, _)) = row.result else { continue };
        let _ = writeln!(
            body,
            "<tr><td class=name>{}</td><td class=name>{}</td><td class=name>{} (1/{})</td><td>{}</td><td>{}</td>\
             <td>{:.1}</td><td>{:.3}</td><td>{}</td><td>{:.3}</td></tr>",
            escape(row.method),
            escape(row.scene),
            escape(&format!("{} {}", e.field, e.representation.name())),
            e.field_downsampling,
            gaussian_count(e),
            e.fit_iterations,
            e.fit_seconds,
            e.fit_seconds_per_iteration,
            e.fit_peak_memory_mib.map_or("–".into(), |m| format!("{m:.0}")),
            e.render_seconds_per_view
        );
    }
    body.push_str("</table>\n");
}

/// Per scene with a fit, the training loss and the Gaussian count against iteration, one line per method.
fn plots(body: &mut String, rows: &[ReportRow]) {
    let mut scenes: Vec<&str> = rows.iter().map(|r| r.scene).collect();
    scenes.sort();
    scenes.dedup();
    body.push_str("<h2>Training curves</h2>\n");
    for scene in scenes {
        let fits: Vec<(&str, &Evaluation)> = rows
            .iter()
            .filter(|r| r.scene == scene)
            .filter_map(|r| r.result.ok().map(|(e, _)| (r.method, e)))
            .collect();
        if fits.is_empty() {
            continue;
        }
        let loss: Vec<Series> = fits
            .iter()
            .map(|(m, e)| Series {
                name: m.to_string(),
                points: e.loss_curve.iter().map(|&(i, l)| (i as f64, l)).collect(),
            })
            .collect();
        let count: Vec<Series> = fits
            .iter()
            .map(|(m, e)| Series {
                name: m.to_string(),
                points: e.gaussian_curve.iter().map(|&(i, n)| (i as f64, n as f64)).collect(),
            })
            .collect();
        let title_loss = format!("{scene}: training loss");
        let title_count = format!("{scene}: Gaussians");
        let _ = writeln!(
            body,
            "<div class=plots>{}{}</div>",
            LineChart {
                title: &title_loss,
                x_label: "iteration",
                y_label: "loss",
                log_y: true,
                series: &loss
            }
            .svg(),
            LineChart {
                title: &title_count,
                x_label: "iteration",
                y_label: "Gaussians",
                log_y: false,
                series: &count
            }
            .svg()
        );
    }
}

/// Labelled side-by-sides of the first test views, copied beside the page.
fn images(body: &mut String, out: &Path, rows: &[ReportRow]) -> anyhow::Result<()> {
    body.push_str("<h2>Images</h2>\n");
    for row in rows {
        let Ok((evaluation, dir)) = row.result else { continue };
        let latent = evaluation.views.iter().any(|v| v.reconstruction.is_some());
        let labels: Vec<&str> = if latent {
            SIDE_BY_SIDE_PANELS.to_vec()
        } else {
            vec![SIDE_BY_SIDE_PANELS[0], "render", SIDE_BY_SIDE_PANELS[3]]
        };
        let label_row: String = labels.iter().map(|l| format!("<span>{}</span>", escape(l))).collect();
        let _ = writeln!(body, "<h3>{} / {}</h3>", escape(row.method), escape(row.scene));
        let folder = Path::new("images")
            .join(file_name(row.method))
            .join(file_name(row.scene));
        let mut shown = 0;
        for view in evaluation.views.iter().filter(|v| v.split == Split::Test) {
            if shown == IMAGES_PER_ROW {
                break;
            }
            let stem = Path::new(&view.name).with_extension("");
            let png = format!("{}.png", stem.to_string_lossy().replace(['/', '\\'], "_"));
            let source = dir.join(&png);
            if !source.is_file() {
                continue;
            }
            std::fs::create_dir_all(out.join(&folder))?;
            let target = folder.join(&png);
            std::fs::copy(&source, out.join(&target))
                .with_context(|| format!("copying {} into the report", source.display()))?;
            let _ = writeln!(
                body,
                "<figure><div class=labels>{label_row}</div><img src=\"{}\" alt=\"{}\" loading=\"eager\">\
                 <figcaption>{}: PSNR {:.2}, SSIM {:.4}</figcaption></figure>",
                escape(&target.to_string_lossy()),
                escape(&view.name),
                escape(&view.name),
                view.render.psnr,
                view.render.ssim
            );
            shown += 1;
        }
        if shown == 0 {
            body.push_str("<p>No side-by-side images (evaluate ran with <code>images: false</code>).</p>\n");
        }
    }
    Ok(())
}

/// Each camera-path video, copied beside the page, with its render and decode speeds.
fn videos_section(body: &mut String, out: &Path, videos: &[VideoRow]) -> anyhow::Result<()> {
    if videos.is_empty() {
        return Ok(());
    }
    body.push_str("<h2>Videos</h2>\n");
    for video in videos {
        let info: Option<crate::path::PathRenderInfo> =
            crate::artifacts::read_json(&video.dir.join(crate::path::PATH_INFO_FILE)).ok();
        let _ = writeln!(body, "<h3>{} / {}</h3>", escape(video.name), escape(video.scene));
        if let Some(info) = &info {
            let fps = |seconds: f64| {
                if seconds > 0.0 {
                    format!("{:.1}", 1.0 / seconds)
                } else {
                    "–".into()
                }
            };
            let _ = writeln!(
                body,
                "<p>{} frames at {}×{}; rendering {} frames/s, decoding {} frames/s.</p>",
                info.frames,
                info.width,
                info.height,
                fps(info.render_seconds_per_frame),
                fps(info.decode_seconds_per_frame)
            );
        }
        let folder = Path::new("videos")
            .join(file_name(video.name))
            .join(file_name(video.scene));
        for file in [crate::path::SIDE_BY_SIDE_VIDEO_FILE, crate::path::PATH_VIDEO_FILE] {
            let source = video.dir.join(file);
            if !source.is_file() {
                continue;
            }
            std::fs::create_dir_all(out.join(&folder))?;
            std::fs::copy(&source, out.join(folder.join(file)))
                .with_context(|| format!("copying {} into the report", source.display()))?;
            let _ = writeln!(
                body,
                "<figure><video controls loop muted preload=\"metadata\" src=\"{}\"></video><figcaption>{}</figcaption></figure>",
                escape(&folder.join(file).to_string_lossy()),
                escape(file)
            );
        }
    }
    Ok(())
}

/// The stage timings of one run: a table and a bar chart of computing seconds per stage.
pub fn run_page(report: &RunReport) -> String {
    let mut body = format!(
        "<p><a href=\"{INDEX_FILE}\">Back to the report</a>. Pipeline <b>{}</b>, {} worker(s), {:.0} s wall.</p>\
         <table><tr><th>stage</th><th>computed</th><th>cached</th><th>failed</th><th>skipped</th><th>seconds</th></tr>",
        escape(&report.pipeline),
        report.workers,
        report.seconds
    );
    for s in &report.stages {
        let _ = write!(
            body,
            "<tr><td class=name>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            escape(&s.stage),
            s.computed,
            s.cached,
            s.failed,
            s.skipped,
            s.seconds
        );
    }
    body.push_str("</table>");
    let bars: Vec<Bar> = report
        .stages
        .iter()
        .filter(|s| s.seconds > 0.0)
        .map(|s| Bar {
            label: s.stage.clone(),
            value: s.seconds,
        })
        .collect();
    body.push_str(
        &BarChart {
            title: "computing time per stage (this run; cached stages cost nothing)",
            unit: "s",
            bars: &bars,
        }
        .svg(),
    );
    let failures: Vec<String> = report
        .outcomes
        .iter()
        .filter_map(|o| match &o.status {
            Status::Failed { error } => Some(format!(
                "<li>{} {}: {}</li>",
                escape(&o.stage),
                escape(o.scene.as_deref().unwrap_or("")),
                escape(error)
            )),
            _ => None,
        })
        .collect();
    if !failures.is_empty() {
        let _ = write!(body, "<h2>Failures</h2><ul>{}</ul>", failures.concat());
    }
    page("lrf-flow run", &body)
}
