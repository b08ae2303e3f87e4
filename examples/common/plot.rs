//! The accuracy-against-compression sweep of `deep_compression`, as CSV and as a small
//! hand-written SVG chart (no plotting dependency).

use std::fmt::Write as _;
use std::path::Path;

use slimnn::{Error, Result};

/// One point: sparsity, compression rate, test accuracy, and whether it was retrained.
pub type Point = (f64, f64, f64, bool);

/// Writes `<stem>-sweep.csv` and `<stem>-sweep.svg` into `dir`, the chart titled by
/// the network's name.
pub fn write(
    dir: &Path,
    stem: &str,
    network: &str,
    points: &[Point],
    dense_accuracy: f64,
) -> Result<()> {
    let mut csv = String::from("sparsity,compression,accuracy,retrained\n");
    for &(s, c, a, r) in points {
        let _ = writeln!(csv, "{s},{c:.3},{a:.4},{r}");
    }
    save(&dir.join(format!("{stem}-sweep.csv")), &csv)?;
    save(
        &dir.join(format!("{stem}-sweep.svg")),
        &svg(network, points, dense_accuracy),
    )
}

fn save(path: &Path, text: &str) -> Result<()> {
    slimnn::io::write_atomically(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| Error::Io {
            path: tmp.into(),
            source: e,
        })
    })
}

/// Accuracy (%) against compression (×, log scale): the sweep without retraining as a
/// line, the retrained pipeline as a highlighted point, the dense accuracy dashed.
fn svg(network: &str, points: &[Point], dense: f64) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 400.0, 60.0, 50.0, 30.0, 20.0);
    let max_c = points.iter().map(|p| p.1).fold(2.0f64, f64::max) * 1.2;
    let min_a = (points.iter().map(|p| p.2).fold(dense, f64::min) * 100.0 - 1.0).floor();
    let max_a = 100.0;
    let x = |c: f64| left + (c.ln() / max_c.ln()) * (w - left - right);
    let y = |a: f64| top + (max_a - 100.0 * a) / (max_a - min_a) * (h - top - bottom);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">{network} on MNIST: accuracy against compression</text>\n",
        w / 2.0
    );
    // Axes, ticks and labels.
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0}\" stroke=\"black\"/>",
        h - bottom,
        w - right
    );
    for c in [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        .into_iter()
        .filter(|&c| c <= max_c)
    {
        let _ = writeln!(
            out,
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{c}x</text>",
            x(c),
            top,
            h - bottom,
            h - bottom + 16.0
        );
    }
    let step = ((max_a - min_a) / 8.0).ceil().max(1.0);
    let mut a = min_a;
    while a <= max_a {
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#eee\"/><text x=\"{2}\" y=\"{3}\" text-anchor=\"end\">{a}%</text>",
            y(a / 100.0),
            w - right,
            left - 6.0,
            y(a / 100.0) + 4.0
        );
        a += step;
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">compression (original bytes / file bytes, log scale)</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">top-1 test accuracy</text>",
        (left + w - right) / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    // Dense accuracy, the sweep, and the retrained pipeline.
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"gray\" stroke-dasharray=\"5,4\"/><text x=\"{1}\" y=\"{2}\" text-anchor=\"end\" fill=\"gray\">dense {3:.2}%</text>",
        y(dense),
        w - right,
        y(dense) - 5.0,
        100.0 * dense
    );
    let line: Vec<String> = points
        .iter()
        .filter(|p| !p.3)
        .map(|p| format!("{:.1},{:.1}", x(p.1), y(p.2)))
        .collect();
    let _ = writeln!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>",
        line.join(" ")
    );
    for p in points {
        let (color, r) = if p.3 {
            ("#d62728", 6.0)
        } else {
            ("#1f77b4", 3.5)
        };
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{color}\"><title>{:.0}% pruned: {:.1}x, {:.2}%</title></circle>",
            x(p.1),
            y(p.2),
            100.0 * p.0,
            p.1,
            100.0 * p.2
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{0}\" y=\"{1}\" fill=\"#1f77b4\">prune + share + Huffman, no retraining</text>\n\
         <text x=\"{0}\" y=\"{2}\" fill=\"#d62728\">with retraining and centroid fine-tuning</text>\n</svg>",
        left + 10.0,
        h - bottom - 26.0,
        h - bottom - 10.0
    );
    out
}
