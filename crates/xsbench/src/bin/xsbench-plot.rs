//! xsbench-plot: draws `xsbench-deaths` CSV (stdin) as an SVG (stdout):
//! one line per strategy, a chosen column against the number of domains,
//! both axes logarithmic.
//!
//! `xsbench-plot [COLUMN]` (default `hv_calls_per_death`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;

const W: f64 = 720.0;
const H: f64 = 440.0;
const L: f64 = 80.0;
const R: f64 = 170.0;
const T: f64 = 40.0;
const B: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn main() {
    let column = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "hv_calls_per_death".into());
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("xsbench-plot: cannot read stdin");
        std::process::exit(1);
    }
    let mut lines = input
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let Some(header) = lines.next() else {
        eprintln!("xsbench-plot: no CSV header");
        std::process::exit(1);
    };
    let cols: Vec<&str> = header.split(',').collect();
    let (Some(si), Some(ni), Some(vi)) = (
        cols.iter().position(|c| *c == "strategy"),
        cols.iter().position(|c| *c == "n"),
        cols.iter().position(|c| *c == column),
    ) else {
        eprintln!("xsbench-plot: columns strategy, n, {column} needed");
        std::process::exit(1);
    };
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let (Some(s), Some(n), Some(v)) = (f.get(si), f.get(ni), f.get(vi)) else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (n.parse::<f64>(), v.parse::<f64>()) {
            if n > 0.0 && v > 0.0 {
                series.entry((*s).to_owned()).or_default().push((n, v));
            }
        }
    }
    let pts = series.values().flatten();
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if xmin > xmax {
        eprintln!("xsbench-plot: no data");
        std::process::exit(1);
    }
    let (lx0, lx1) = (
        xmin.log10().floor(),
        xmax.log10().ceil().max(xmin.log10().floor() + 1.0),
    );
    let (ly0, ly1) = (
        ymin.log10().floor(),
        ymax.log10().ceil().max(ymin.log10().floor() + 1.0),
    );
    let px = |x: f64| L + (x.log10() - lx0) / (lx1 - lx0) * (W - L - R);
    let py = |y: f64| H - B - (y.log10() - ly0) / (ly1 - ly0) * (H - T - B);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for e in (lx0 as i32)..=(lx1 as i32) {
        let x = px(10f64.powi(e));
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{T}" x2="{x}" y2="{}" stroke="#ddd"/>"##,
            H - B
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{}" text-anchor="middle">1e{e}</text>"#,
            H - B + 18.0
        );
    }
    for e in (ly0 as i32)..=(ly1 as i32) {
        let y = py(10f64.powi(e));
        let _ = writeln!(
            svg,
            r##"<line x1="{L}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##,
            W - R
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">1e{e}</text>"#,
            L - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">live introduced domains (N)</text>"#,
        (L + W - R) / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{column}</text>"#,
        (T + H - B) / 2.0
    );
    for (i, (name, mut v)) in series.into_iter().enumerate() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = COLORS[i % COLORS.len()];
        let points: Vec<String> = v
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        for &(x, y) in &v {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                px(x),
                py(y)
            );
        }
        let ly = T + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/>"#,
            W - R + 15.0,
            W - R + 40.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{name}</text>"#,
            W - R + 46.0,
            ly + 4.0
        );
    }
    let _ = writeln!(svg, "</svg>");
    print!("{svg}");
}
