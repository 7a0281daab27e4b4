//! `--svg FILE`: the results as grouped bar charts, one group per workload and one colour per
//! client and engine: IOPS of the I/O workloads, and the destroy time of the destroy ones,
//! both on log scales (the workloads differ by orders of magnitude).

use std::fmt::Write;

use super::client::Client;
use super::machine::Machine;
use super::report::{si, Row};
use super::workload::Workload;

const PALETTE: [&str; 12] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f3b5c", "#8cd17d",
];
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const BAR: f64 = 13.0;
const GROUP_GAP: f64 = 26.0;
const PLOT_HEIGHT: f64 = 300.0;
const LEGEND_ITEM: f64 = 190.0;

/// A chart of one figure over some workloads.
struct Panel<'a> {
    title: &'a str,
    axis: &'a str,
    workloads: Vec<Workload>,
    value: fn(&Row) -> f64,
    label: fn(f64) -> String,
}

/// `lineup` is every client in the order of the bench; those with no row get no colour.
pub fn render(
    rows: &[Row],
    lineup: &[Client],
    machine: &Machine,
    repeat: u32,
    command: &str,
) -> String {
    let series: Vec<Client> = lineup
        .iter()
        .copied()
        .filter(|c| rows.iter().any(|r| r.client == *c))
        .collect();
    let mut io = Vec::new();
    let mut destroy = Vec::new();
    for row in rows {
        let list = if row.workload.is_destroy() {
            &mut destroy
        } else {
            &mut io
        };
        if !list.contains(&row.workload) {
            list.push(row.workload);
        }
    }
    let panels: Vec<Panel> = [
        Panel {
            title: "Throughput (higher is better)",
            axis: "IOPS (log scale)",
            workloads: io,
            value: |r| r.medians.iops,
            label: si,
        },
        Panel {
            title: "Destroy with reads in flight (lower is better)",
            axis: "destroy time p50, µs (log)",
            workloads: destroy,
            value: |r| r.medians.lat_p50_us,
            label: micros,
        },
    ]
    .into_iter()
    .filter(|p| !p.workloads.is_empty())
    .collect();

    let most_groups = panels.iter().map(|p| p.workloads.len()).max().unwrap_or(1) as f64;
    let group_width = series.len() as f64 * BAR + GROUP_GAP;
    let width = (LEFT + RIGHT + most_groups * group_width).max(960.0);
    let per_row = ((width - LEFT) / LEGEND_ITEM).floor().max(1.0) as usize;
    let legend_rows = series.len().div_ceil(per_row) as f64;
    let legend_top = 62.0;
    let first_panel = legend_top + legend_rows * 22.0 + 30.0;
    let panel_height = PLOT_HEIGHT + 110.0;
    let height = first_panel + panels.len() as f64 * panel_height + 30.0;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="30" font-size="20" font-weight="bold">aioctx bench: every client on the same file, in one run</text>
<text x="{LEFT}" y="50" font-size="12" fill="#555">median of {repeat} interleaved runs per bar; 4 KiB blocks unless the workload says otherwise</text>
"##
    );
    for (i, client) in series.iter().enumerate() {
        let x = LEFT + (i % per_row) as f64 * LEGEND_ITEM;
        let y = legend_top + (i / per_row) as f64 * 22.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{y:.1}" width="14" height="14" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            PALETTE[i % PALETTE.len()],
            x + 20.0,
            y + 12.0,
            escape(&client.label())
        );
    }
    for (p, panel) in panels.iter().enumerate() {
        let top = first_panel + p as f64 * panel_height;
        draw_panel(&mut svg, panel, rows, &series, top, group_width);
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{:.0}" font-size="12" fill="#333">{}</text>
<text x="{LEFT}" y="{:.0}" font-size="11" fill="#555">{}</text>
</svg>
"##,
        height - 30.0,
        escape(&machine.line()),
        height - 12.0,
        escape(command)
    );
    svg
}

fn draw_panel(
    svg: &mut String,
    panel: &Panel,
    rows: &[Row],
    series: &[Client],
    top: f64,
    group_width: f64,
) {
    let values: Vec<f64> = rows
        .iter()
        .filter(|r| panel.workloads.contains(&r.workload))
        .map(panel.value)
        .filter(|v| *v > 0.0)
        .collect();
    let low = values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1e-3);
    let high = values.iter().copied().fold(0.0, f64::max).max(low * 10.0);
    let (lo_exp, hi_exp) = (low.log10().floor(), high.log10().ceil());
    let bottom = top + PLOT_HEIGHT;
    let y_of = |v: f64| bottom - (v.log10() - lo_exp) / (hi_exp - lo_exp) * PLOT_HEIGHT;
    let right = LEFT + panel.workloads.len() as f64 * group_width;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
        top - 12.0,
        escape(panel.title)
    );
    let mut exp = lo_exp;
    while exp <= hi_exp {
        let v = 10f64.powf(exp);
        let y = y_of(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            y + 4.0,
            (panel.label)(v)
        );
        exp += 1.0;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{top:.1}" x2="{LEFT}" y2="{bottom:.1}" stroke="#333"/><line x1="{LEFT}" y1="{bottom:.1}" x2="{right:.1}" y2="{bottom:.1}" stroke="#333"/>
<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"##,
        LEFT - 62.0,
        top + PLOT_HEIGHT / 2.0,
        escape(panel.axis)
    );
    for (g, workload) in panel.workloads.iter().enumerate() {
        let group_left = LEFT + g as f64 * group_width + GROUP_GAP / 2.0;
        for (s, client) in series.iter().enumerate() {
            let Some(row) = rows
                .iter()
                .find(|r| r.workload == *workload && r.client == *client)
            else {
                continue;
            };
            let value = (panel.value)(row);
            if value <= 0.0 {
                continue;
            }
            let x = group_left + s as f64 * BAR;
            let y = y_of(value.max(10f64.powf(lo_exp)));
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} on {}: {}</title></rect>"#,
                BAR - 2.0,
                bottom - y,
                PALETTE[s % PALETTE.len()],
                escape(&client.label()),
                escape(&workload.to_string()),
                (panel.label)(value)
            );
            let _ = writeln!(
                svg,
                r##"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="9" fill="#333">{}</text>"##,
                x + BAR / 2.0 + 3.0,
                y - 4.0,
                (panel.label)(value)
            );
        }
        let center = group_left + series.len() as f64 * BAR / 2.0;
        let name = workload.to_string();
        let (first, second) = split_label(&name);
        let _ = writeln!(
            svg,
            r#"<text x="{center:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text><text x="{center:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            escape(first),
            bottom + 30.0,
            escape(second)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">workload</text>"#,
        (LEFT + right) / 2.0,
        bottom + 52.0
    );
}

/// "randread 4k cached qd32" -> ("randread 4k", "cached qd32"): two short lines under a group.
fn split_label(name: &str) -> (&str, &str) {
    let spaces: Vec<usize> = name.match_indices(' ').map(|(at, _)| at).collect();
    match spaces.get(1).or(spaces.first()) {
        Some(&at) => (&name[..at], &name[at + 1..]),
        None => (name, ""),
    }
}

/// Microseconds with the digits that matter at their size.
fn micros(v: f64) -> String {
    match v {
        v if v >= 10.0 => format!("{v:.0}"),
        v if v >= 1.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
