//! Svg draws latency CDFs as a standalone SVG document.

use std::fmt::Write as _;

/// Series is one latency distribution to draw, in ms.
pub struct Series {
    pub label: String,
    pub color: &'static str,
    pub dashed: bool,
    pub ms: Vec<f64>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// POINTS bounds the points drawn per series.
const POINTS: usize = 400;

/// cdf draws the empirical CDF of every series on a log latency axis.
pub fn cdf(title: &str, series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.ms.iter().copied());
    let (lo, hi) = all
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo, hi)
    } else {
        (1.0, 10.0)
    };
    let (d0, d1) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |v: f64| LEFT + (v.max(10f64.powf(d0)).log10() - d0) / (d1 - d0) * plot_w;
    let y = |q: f64| TOP + (1.0 - q) * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/><text x="{LEFT}" y="22" font-size="14">{}</text>"#,
        escape(title)
    );
    for d in (d0 as i32)..=(d1 as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(d);
            if v < 10f64.powf(d0) || v > 10f64.powf(d1) {
                continue;
            }
            let (px, major) = (x(v), m == 1.0);
            let _ = writeln!(
                out,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="{}"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + plot_h,
                if major { "#bbb" } else { "#eee" },
                TOP + plot_h + 16.0,
                number(v)
            );
        }
    }
    for q in [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0] {
        let py = y(q);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{q}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency from the intended send time (ms, log scale)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">fraction of requests answered</text>"#,
        TOP + plot_h / 2.0
    );
    for (k, s) in series.iter().enumerate() {
        let mut ms: Vec<f64> = s.ms.iter().copied().filter(|v| v.is_finite()).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let step = n.div_ceil(POINTS).max(1);
        let mut points = String::new();
        for (i, v) in ms.iter().enumerate() {
            if i % step == 0 || i + 1 == n {
                let _ = write!(points, "{:.1},{:.1} ", x(*v), y((i + 1) as f64 / n as f64));
            }
        }
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            s.color,
            points.trim_end()
        );
        let ly = TOP + 10.0 + k as f64 * 20.0;
        let lx = LEFT + plot_w + 12.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 28.0,
            s.color,
            lx + 34.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn number(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_draws_one_line_per_series_and_escapes_labels() {
        let svg = cdf(
            "a < b",
            &[
                Series {
                    label: "on".into(),
                    color: "#000",
                    dashed: false,
                    ms: vec![1.0, 2.0, 30.0],
                },
                Series {
                    label: "off".into(),
                    color: "#000",
                    dashed: true,
                    ms: vec![],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt; b"));
        assert!(!svg.contains("NaN"));
    }
}
