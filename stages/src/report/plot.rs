//! Charts as standalone SVG text (no scripts, fonts or network): what the HTML report embeds.

use std::fmt::Write as _;

/// One named line of a [`LineChart`].
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart of several series over a shared x axis.
#[derive(Debug, Clone)]
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// A logarithmic y axis (loss curves span decades); non-positive values are left out.
    pub log_y: bool,
    pub series: &'a [Series],
}

/// One labelled bar of a [`BarChart`].
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: f64,
}

/// Horizontal bars, largest scale first as given.
#[derive(Debug, Clone)]
pub struct BarChart<'a> {
    pub title: &'a str,
    pub unit: &'a str,
    pub bars: &'a [Bar],
}

/// Line colours (Tableau 10), cycled.
const COLORS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
];

const WIDTH: f64 = 580.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 50.0;

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// About five round tick values covering `[low, high]`.
fn ticks(low: f64, high: f64) -> Vec<f64> {
    let span = (high - low).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * magnitude);
    let first = (low / step).ceil() as i64;
    let last = (high / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick label: no more digits than the tick spacing needs.
fn tick_label(value: f64) -> String {
    let a = value.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e5 || a < 1e-3 {
        format!("{value:.0e}")
    } else if a >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn frame(svg: &mut String, title: &str) {
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12"><title>{t}</title><rect width="{WIDTH}" height="{HEIGHT}" fill="white"/><text x="{x}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{t}</text>"#,
        t = escape(title),
        x = (LEFT + WIDTH - RIGHT) / 2.0,
    );
}

impl LineChart<'_> {
    pub fn svg(&self) -> String {
        let transform = |y: f64| if self.log_y { y.log10() } else { y };
        let points: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_y || *y > 0.0))
                    .map(|&(x, y)| (x, transform(y)))
                    .collect()
            })
            .collect();
        let all = || points.iter().flatten();
        let mut svg = String::new();
        frame(&mut svg, self.title);
        if all().next().is_none() {
            let _ = write!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#666">no data</text></svg>"##,
                WIDTH / 2.0,
                HEIGHT / 2.0
            );
            return svg;
        }
        let (mut x0, mut x1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (mut y0, mut y1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        if x1 <= x0 {
            (x0, x1) = (x0 - 0.5, x1 + 0.5);
        }
        if y1 <= y0 {
            (y0, y1) = (y0 - 0.5, y1 + 0.5);
        }
        let pad = 0.05 * (y1 - y0);
        (y0, y1) = (y0 - pad, y1 + pad);
        let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
        let py = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * plot_h;
        let _ = write!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##
        );
        for t in ticks(x0, x1) {
            let _ = write!(
                svg,
                r##"<line x1="{x}" x2="{x}" y1="{TOP}" y2="{b}" stroke="#eee"/><text x="{x}" y="{ty}" text-anchor="middle">{l}</text>"##,
                x = px(t),
                b = TOP + plot_h,
                ty = TOP + plot_h + 16.0,
                l = tick_label(t)
            );
        }
        let y_ticks = if self.log_y {
            ticks(y0, y1)
                .into_iter()
                .filter(|t| t.fract() == 0.0)
                .collect::<Vec<_>>()
        } else {
            ticks(y0, y1)
        };
        let y_ticks = if y_ticks.is_empty() { ticks(y0, y1) } else { y_ticks };
        for t in y_ticks {
            let label = if self.log_y {
                tick_label(10f64.powf(t))
            } else {
                tick_label(t)
            };
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" x2="{r}" y1="{y}" y2="{y}" stroke="#eee"/><text x="{lx}" y="{ly}" text-anchor="end">{label}</text>"##,
                r = LEFT + plot_w,
                y = py(t),
                lx = LEFT - 6.0,
                ly = py(t) + 4.0,
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" text-anchor="middle">{l}</text><text transform="translate(16 {cy}) rotate(-90)" text-anchor="middle">{yl}{log}</text>"#,
            x = LEFT + plot_w / 2.0,
            y = HEIGHT - 12.0,
            l = escape(self.x_label),
            cy = TOP + plot_h / 2.0,
            yl = escape(self.y_label),
            log = if self.log_y { " (log scale)" } else { "" },
        );
        for (i, (series, line)) in self.series.iter().zip(&points).enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = line
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            if !path.is_empty() {
                let _ = write!(
                    svg,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
                    path.join(" ")
                );
            }
            let ly = TOP + 14.0 + 18.0 * i as f64;
            let _ = write!(
                svg,
                r#"<line x1="{a}" x2="{b}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="3"/><text x="{t}" y="{ty}">{n}</text>"#,
                a = WIDTH - RIGHT + 10.0,
                b = WIDTH - RIGHT + 30.0,
                y = ly,
                t = WIDTH - RIGHT + 36.0,
                ty = ly + 4.0,
                n = escape(&series.name),
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

impl BarChart<'_> {
    pub fn svg(&self) -> String {
        let row = 22.0;
        let height = TOP + 20.0 + row * self.bars.len().max(1) as f64;
        let label_width = 220.0;
        let plot_w = WIDTH - label_width - 90.0;
        let max = self
            .bars
            .iter()
            .map(|b| b.value)
            .fold(0.0, f64::max)
            .max(f64::MIN_POSITIVE);
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12"><title>{t}</title><rect width="{WIDTH}" height="{height}" fill="white"/><text x="{x}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{t}</text>"#,
            t = escape(self.title),
            x = WIDTH / 2.0
        );
        for (i, bar) in self.bars.iter().enumerate() {
            let y = TOP + 6.0 + row * i as f64;
            let w = (bar.value.max(0.0) / max * plot_w).max(0.5);
            let _ = write!(
                svg,
                r#"<text x="{lx}" y="{ty}" text-anchor="end">{l}</text><rect x="{label_width}" y="{y}" width="{w:.1}" height="{h}" fill="{c}"/><text x="{vx:.1}" y="{ty}">{v} {u}</text>"#,
                lx = label_width - 6.0,
                ty = y + 13.0,
                l = escape(&bar.label),
                h = row - 6.0,
                c = COLORS[0],
                vx = label_width + w + 4.0,
                v = tick_label((bar.value * 10.0).round() / 10.0),
                u = escape(self.unit),
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.13, 0.61);
        let expected = [0.2, 0.3, 0.4, 0.5, 0.6];
        assert!(
            t.len() == 5 && t.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12),
            "{t:?}"
        );
        let t = ticks(-2.2, 0.3);
        assert!(
            t.first().unwrap() >= &-2.2 && t.last().unwrap() <= &0.3 && t.len() >= 3,
            "{t:?}"
        );
    }

    #[test]
    fn a_line_chart_is_well_formed_svg_with_one_polyline_per_series() {
        let series = [
            Series {
                name: "fern <a&b>".into(),
                points: vec![(0.0, 1.0), (100.0, 0.1), (200.0, 0.01)],
            },
            Series {
                name: "bird".into(),
                points: vec![(0.0, 2.0), (200.0, 0.5)],
            },
        ];
        let chart = LineChart {
            title: "loss",
            x_label: "iteration",
            y_label: "loss",
            log_y: true,
            series: &series,
        };
        let svg = chart.svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("fern &lt;a&amp;b&gt;"), "names are escaped");
        assert!(
            svg.contains(">0.01<") && svg.contains(">1<"),
            "log ticks at powers of ten: {svg}"
        );
        // The three points of the first series map the decades onto equal vertical steps.
        let first = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        let ys: Vec<f64> = first
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(((ys[1] - ys[0]) - (ys[2] - ys[1])).abs() < 0.2, "{ys:?}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn an_empty_chart_says_so() {
        let chart = LineChart {
            title: "t",
            x_label: "x",
            y_label: "y",
            log_y: true,
            series: &[Series {
                name: "s".into(),
                points: vec![(1.0, 0.0), (2.0, f64::NAN)],
            }],
        };
        assert!(chart.svg().contains("no data"));
    }

    #[test]
    fn bars_scale_to_the_largest_value() {
        let bars = [
            Bar {
                label: "fit".into(),
                value: 100.0,
            },
            Bar {
                label: "render".into(),
                value: 25.0,
            },
        ];
        let svg = BarChart {
            title: "time",
            unit: "s",
            bars: &bars,
        }
        .svg();
        let widths: Vec<f64> = svg
            .split("<rect x=\"220\"")
            .skip(1)
            .map(|r| {
                r.split("width=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(widths.len(), 2);
        assert!((widths[0] / widths[1] - 4.0).abs() < 0.01, "{widths:?}");
    }
}
