//! The capacity report: result files in, a self-contained HTML page (charts
//! as inline SVG) and a Markdown summary out.
//!
//! Charts are written by hand as SVG rather than with plotters: four kinds
//! of line chart are all the report needs, hand-written SVG adds no
//! dependency (plotters pulls a font stack for text unless trimmed, and
//! builds are slow on the 2-core target), and the output stays small,
//! diffable and readable without JavaScript.
//!
//! Runs are grouped by target label (so Sluice and another SCP can share one
//! report) and ordered by load (associations for closed-loop runs, the
//! target rate for open-loop runs). The saturation knee of a target is the
//! lowest load that reaches 90% of its best throughput; the capacity answer
//! is the best throughput among runs whose p99 C-STORE latency meets the
//! objective, projected to instances/day and TB/day.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::stats::{RetrievalResult, RunResult};

const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed.
    pub dashed: bool,
    /// Colour index.
    pub colour: usize,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_max(value: f64) -> f64 {
    if value.is_nan() || value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if value <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn format_number(value: f64) -> String {
    if value.abs() >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// An SVG line chart with axes, ticks and a legend. The x axis is
/// logarithmic (base 2) when every x is positive and they span 8x or more.
pub fn line_chart(
    id: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> String {
    let (width, height) = (640.0, 360.0);
    let (left, right, top, bottom) = (70.0, 170.0, 36.0, 50.0);
    let plot_width = width - left - right;
    let plot_height = height - top - bottom;
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect();
    let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let x_max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_x = x_min > 0.0 && x_max / x_min >= 8.0;
    let (x_low, x_high) = if xs.is_empty() {
        (0.0, 1.0)
    } else if log_x {
        (x_min.log2(), x_max.log2())
    } else if x_max > x_min {
        (x_min.min(0.0), x_max)
    } else {
        (x_min - 1.0, x_max + 1.0)
    };
    let y_high = nice_max(ys.iter().copied().fold(0.0, f64::max));
    let map_x = |x: f64| {
        let value = if log_x { x.log2() } else { x };
        left + (value - x_low) / (x_high - x_low).max(1e-12) * plot_width
    };
    let map_y = |y: f64| top + plot_height - (y / y_high) * plot_height;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="20" font-size="14" font-weight="bold">{}</text>"#,
        left,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#999"/>"##
    );
    for step in 0..=5 {
        let value = y_high * f64::from(step) / 5.0;
        let y = map_y(value);
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_width,
            left - 6.0,
            y + 4.0,
            format_number(value)
        );
    }
    let mut x_ticks: Vec<f64> = xs.clone();
    x_ticks.sort_by(f64::total_cmp);
    x_ticks.dedup();
    if x_ticks.len() > 12 {
        let stride = x_ticks.len().div_ceil(12);
        x_ticks = x_ticks.into_iter().step_by(stride).collect();
    }
    for x in x_ticks {
        let position = map_x(x);
        let _ = write!(
            svg,
            r#"<text x="{position:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top + plot_height + 16.0,
            format_number(x)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}{}</text>"#,
        left + plot_width / 2.0,
        height - 10.0,
        escape(x_label),
        if log_x { " (log scale)" } else { "" }
    );
    let _ = write!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        top + plot_height / 2.0,
        top + plot_height / 2.0,
        escape(y_label)
    );
    for (index, line) in series.iter().enumerate() {
        let colour = PALETTE[line.colour % PALETTE.len()];
        let mut points = line.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", map_x(x), map_y(y)))
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<polyline class="series" fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in &points {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {} -> {}</title></circle>"#,
                map_x(x),
                map_y(y),
                escape(&line.name),
                format_number(x),
                format_number(y)
            );
        }
        let legend_y = top + 14.0 + index as f64 * 16.0;
        let legend_x = left + plot_width + 12.0;
        let _ = write!(
            svg,
            r#"<line x1="{legend_x}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
            legend_y - 4.0,
            legend_x + 18.0,
            legend_y - 4.0,
            legend_x + 22.0,
            escape(&line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The load level of a run: associations (closed loop) or target rate
/// (open loop) of the lane the load was varied on - the retrieval lane
/// when the run has one (a sweep's levels apply to it, the store lane of a
/// mixed run is held constant), else the store lane.
pub fn load_level(result: &RunResult) -> f64 {
    if let Some(retrieval) = &result.retrieval {
        return match retrieval.config.rate_per_s {
            Some(rate) if retrieval.config.mode == "open" => rate,
            _ => retrieval.config.associations as f64,
        };
    }
    match result.load.rate_per_s {
        Some(rate) if result.load.mode == "open" => rate,
        _ => result.load.associations as f64,
    }
}

/// "open" or "closed", of the lane [`load_level`] reads.
fn load_mode(result: &RunResult) -> &str {
    match &result.retrieval {
        Some(retrieval) => &retrieval.config.mode,
        None => &result.load.mode,
    }
}

/// What the retrieval lane of a run did, in a few words: `find STUDY by patient-id`.
fn retrieval_label(retrieval: &RetrievalResult) -> String {
    let config = &retrieval.config;
    let mut text = format!("{} {}", config.operation, config.level);
    if !config.keys.is_empty() {
        text.push_str(" by ");
        text.push_str(&config.keys.join(","));
    }
    text
}

/// What the report concludes for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Target label.
    pub label: String,
    /// Best throughput seen, inst/s.
    pub best_instances_per_s: f64,
    /// Lowest load reaching 90% of the best throughput.
    pub knee_load: Option<f64>,
    /// Best run meeting the latency objective: (load, inst/s, MB/s, p99 ms).
    pub within_objective: Option<(f64, f64, f64, f64)>,
}

/// Knee and capacity of each target label, from its runs with a store lane.
pub fn capacity(results: &[RunResult], slo_p99_ms: f64) -> Vec<Capacity> {
    let mut by_label: BTreeMap<String, Vec<&RunResult>> = BTreeMap::new();
    for result in results.iter().filter(|result| result.has_store_lane()) {
        by_label
            .entry(result.target.label.clone())
            .or_default()
            .push(result);
    }
    by_label
        .into_iter()
        .map(|(label, mut runs)| {
            runs.sort_by(|a, b| load_level(a).total_cmp(&load_level(b)));
            let best = runs
                .iter()
                .map(|run| run.instances_per_s)
                .fold(0.0, f64::max);
            let knee_load = runs
                .iter()
                .find(|run| best > 0.0 && run.instances_per_s >= 0.9 * best)
                .map(|run| load_level(run));
            let within_objective = runs
                .iter()
                .filter(|run| run.totals.instances_ok > 0 && run.latency_ms.store.p99 <= slo_p99_ms)
                .max_by(|a, b| a.instances_per_s.total_cmp(&b.instances_per_s))
                .map(|run| {
                    (
                        load_level(run),
                        run.instances_per_s,
                        run.megabytes_per_s,
                        run.latency_ms.store.p99,
                    )
                });
            Capacity {
                label,
                best_instances_per_s: best,
                knee_load,
                within_objective,
            }
        })
        .collect()
}

/// The retrieval lane's answer for one target and operation.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalCapacity {
    /// Target label and operation (`orthanc: find STUDY by patient-id`).
    pub label: String,
    /// Best rate seen, operations/s.
    pub best_operations_per_s: f64,
    /// Best run meeting the latency objective on the operation's p99:
    /// (load, operations/s, instances/s received, p99 ms).
    pub within_objective: Option<(f64, f64, f64, f64)>,
}

/// The retrieval capacity of each (target, operation) of the runs.
pub fn retrieval_capacity(results: &[RunResult], slo_p99_ms: f64) -> Vec<RetrievalCapacity> {
    let mut by_label: BTreeMap<String, Vec<(&RunResult, &RetrievalResult)>> = BTreeMap::new();
    for result in results {
        if let Some(retrieval) = &result.retrieval {
            by_label
                .entry(format!(
                    "{}: {}",
                    result.target.label,
                    retrieval_label(retrieval)
                ))
                .or_default()
                .push((result, retrieval));
        }
    }
    by_label
        .into_iter()
        .map(|(label, runs)| RetrievalCapacity {
            label,
            best_operations_per_s: runs
                .iter()
                .map(|(_, retrieval)| retrieval.operations_per_s)
                .fold(0.0, f64::max),
            within_objective: runs
                .iter()
                .filter(|(_, retrieval)| {
                    retrieval.totals.counts.operations_ok > 0
                        && retrieval.latency_ms.operation.p99 <= slo_p99_ms
                })
                .max_by(|a, b| a.1.operations_per_s.total_cmp(&b.1.operations_per_s))
                .map(|(result, retrieval)| {
                    (
                        load_level(result),
                        retrieval.operations_per_s,
                        retrieval.instances_per_s,
                        retrieval.latency_ms.operation.p99,
                    )
                }),
        })
        .collect()
}

fn retrieval_sentences(capacities: &[RetrievalCapacity], slo_p99_ms: f64) -> Vec<String> {
    capacities
        .iter()
        .map(|capacity| {
            let objective = match capacity.within_objective {
                Some((load, operations, instances, p99)) => format!(
                    "at p99 <= {slo_p99_ms} ms it sustains {operations:.1} operations/s ({}p99 {p99:.1} ms at load {})",
                    if instances > 0.0 {
                        format!("{instances:.1} instances/s received, ")
                    } else {
                        String::new()
                    },
                    format_number(load)
                ),
                None => format!("no run met p99 <= {slo_p99_ms} ms"),
            };
            format!(
                "**{}**: best {:.1} operations/s; {objective}.",
                capacity.label, capacity.best_operations_per_s
            )
        })
        .collect()
}

fn x_axis_label(results: &[RunResult]) -> &'static str {
    let retrieval = results.iter().any(|result| result.retrieval.is_some());
    match (
        results.iter().all(|result| load_mode(result) == "open"),
        retrieval,
    ) {
        (true, false) => "target rate (instances/s)",
        (true, true) => "target rate (operations/s)",
        (false, _) => "concurrent associations",
    }
}

/// One series per (target, retrieval operation) of the runs that have a
/// retrieval lane.
fn retrieval_series(
    results: &[RunResult],
    value: impl Fn(&RunResult, &RetrievalResult) -> f64,
    suffix: &str,
    dashed: bool,
) -> Vec<Series> {
    let mut names: Vec<String> = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    for result in sorted(results) {
        let Some(retrieval) = &result.retrieval else {
            continue;
        };
        let name = format!(
            "{} {}{suffix}",
            result.target.label,
            retrieval_label(retrieval)
        );
        let index = match names.iter().position(|known| *known == name) {
            Some(index) => index,
            None => {
                names.push(name.clone());
                series.push(Series {
                    name,
                    points: Vec::new(),
                    dashed,
                    colour: names.len() - 1,
                });
                names.len() - 1
            }
        };
        if let Some(line) = series.get_mut(index) {
            line.points
                .push((load_level(result), value(result, retrieval)));
        }
    }
    series
}

fn labels(results: &[RunResult]) -> Vec<String> {
    let mut labels: Vec<String> = results
        .iter()
        .map(|result| result.target.label.clone())
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

fn per_label_series(
    results: &[RunResult],
    value: impl Fn(&RunResult) -> f64,
    suffix: &str,
    dashed: bool,
    colour_offset: usize,
) -> Vec<Series> {
    labels(results)
        .into_iter()
        .enumerate()
        .map(|(index, label)| Series {
            name: format!("{label}{suffix}"),
            points: results
                .iter()
                .filter(|result| result.target.label == label)
                .map(|result| (load_level(result), value(result)))
                .collect(),
            dashed,
            colour: index + colour_offset,
        })
        .collect()
}

fn sorted(results: &[RunResult]) -> Vec<&RunResult> {
    let mut runs: Vec<&RunResult> = results.iter().collect();
    runs.sort_by(|a, b| {
        a.target
            .label
            .cmp(&b.target.label)
            .then(load_level(a).total_cmp(&load_level(b)))
    });
    runs
}

fn capacity_sentences(capacities: &[Capacity], slo_p99_ms: f64, x_label: &str) -> Vec<String> {
    capacities
        .iter()
        .map(|capacity| {
            let knee = capacity
                .knee_load
                .map(|load| format!("throughput saturates at about {} ({x_label}), best {:.1} inst/s", format_number(load), capacity.best_instances_per_s))
                .unwrap_or_else(|| "no instance was stored".to_string());
            let objective = match capacity.within_objective {
                Some((load, instances, megabytes, p99)) => format!(
                    "at p99 <= {slo_p99_ms} ms it sustains {instances:.1} inst/s ({megabytes:.1} MB/s, p99 {p99:.1} ms at load {}): {:.2} million instances/day, {:.2} TB/day of data sets (disk growth; add file meta and index)",
                    format_number(load),
                    instances * 86_400.0 / 1e6,
                    megabytes * 86_400.0 / 1e6
                ),
                None => format!("no run met p99 <= {slo_p99_ms} ms"),
            };
            format!("**{}**: {knee}; {objective}.", capacity.label)
        })
        .collect()
}

fn counters(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(key, count)| format!("{key}: {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The HTML report.
pub fn render_html(results: &[RunResult], title: &str, slo_p99_ms: f64) -> String {
    let x_label = x_axis_label(results);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}td.l{{text-align:left}}.charts{{display:flex;flex-wrap:wrap;gap:12px}}</style></head><body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    let _ = writeln!(
        html,
        "<p>{} runs by sluice-loadgen. Latency of a C-STORE is measured from the last byte \
         of the data set handed to the kernel to the C-STORE-RSP; MB are 10<sup>6</sup> bytes \
         of data sets acknowledged.</p>",
        results.len()
    );
    html.push_str("<section id=\"capacity\"><h2>Capacity</h2><ul>\n");
    for sentence in capacity_sentences(&capacity(results, slo_p99_ms), slo_p99_ms, x_label) {
        let sentence = escape(&sentence);
        let bolded = sentence.replacen("**", "<b>", 1).replacen("**", "</b>", 1);
        let _ = writeln!(html, "<li>{bolded}</li>");
    }
    for sentence in retrieval_sentences(&retrieval_capacity(results, slo_p99_ms), slo_p99_ms) {
        let sentence = escape(&sentence);
        let bolded = sentence.replacen("**", "<b>", 1).replacen("**", "</b>", 1);
        let _ = writeln!(html, "<li>{bolded}</li>");
    }
    html.push_str("</ul><p>Index growth is not visible to the loadgen (it only sees the network); read it from the server's own statistics.</p></section>\n");
    if results.iter().any(|result| result.retrieval.is_some()) {
        html.push_str(&retrieval_html(results, x_label));
    }
    // The ingest sections: runs with a store lane (retrieval-only runs
    // have their own section above).
    let store_runs: Vec<RunResult> = results
        .iter()
        .filter(|result| result.has_store_lane())
        .cloned()
        .collect();
    if !store_runs.is_empty() {
        html.push_str(&store_html(&store_runs, x_label));
    }
    html.push_str("</body></html>\n");
    html
}

/// The ingest sections of the HTML report: throughput and latency against
/// load, throughput over time, the runs and their errors.
fn store_html(store_runs: &[RunResult], x_label: &str) -> String {
    let mut html = String::new();
    html.push_str(
        "<section id=\"throughput-vs-load\"><h2>Throughput vs load</h2><div class=\"charts\">\n",
    );
    html.push_str(&line_chart(
        "chart-instances",
        "Instances/s vs load",
        x_label,
        "instances/s",
        &per_label_series(store_runs, |r| r.instances_per_s, "", false, 0),
    ));
    html.push_str(&line_chart(
        "chart-megabytes",
        "MB/s vs load",
        x_label,
        "MB/s",
        &per_label_series(store_runs, |r| r.megabytes_per_s, "", false, 0),
    ));
    html.push_str("</div></section>\n<section id=\"latency-vs-load\"><h2>Latency percentiles vs load</h2><div class=\"charts\">\n");
    let mut latency = per_label_series(store_runs, |r| r.latency_ms.store.p50, " p50", true, 0);
    latency.extend(per_label_series(
        store_runs,
        |r| r.latency_ms.store.p99,
        " p99",
        false,
        0,
    ));
    html.push_str(&line_chart(
        "chart-latency",
        "C-STORE latency vs load",
        x_label,
        "milliseconds",
        &latency,
    ));
    html.push_str(&line_chart(
        "chart-setup",
        "Association set-up p50 vs load",
        x_label,
        "milliseconds",
        &per_label_series(
            store_runs,
            |r| r.latency_ms.association_setup.p50,
            "",
            false,
            0,
        ),
    ));
    html.push_str("</div></section>\n<section id=\"throughput-over-time\"><h2>Throughput over time</h2><div class=\"charts\">\n");
    for (index, label) in labels(store_runs).into_iter().enumerate() {
        let series: Vec<Series> = sorted(store_runs)
            .into_iter()
            .filter(|result| result.target.label == label)
            .enumerate()
            .map(|(colour, result)| Series {
                name: format!("load {}", format_number(load_level(result))),
                points: result
                    .timeline
                    .iter()
                    .map(|point| (point.t_s as f64, point.instances as f64))
                    .collect(),
                dashed: false,
                colour,
            })
            .collect();
        html.push_str(&line_chart(
            &format!("chart-timeline-{index}"),
            &format!("{label}: instances per second"),
            "seconds since start",
            "instances/s",
            &series,
        ));
    }
    html.push_str("</div></section>\n<section id=\"runs\"><h2>Runs</h2><table><tr><th>target</th><th>mode</th><th>load</th><th>workload</th><th>s</th><th>stored</th><th>failed</th><th>unanswered</th><th>inst/s</th><th>MB/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>set-up p50 ms</th><th>commit p50 ms</th><th>loadgen CPU s/GB</th><th>loadgen RSS MiB</th></tr>\n");
    for result in sorted(store_runs) {
        let store = &result.latency_ms.store;
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{:.2}</td><td>{:.0}</td></tr>",
            escape(&result.target.label),
            escape(&result.load.mode),
            format_number(load_level(result)),
            escape(&result.load.workload),
            result.elapsed_s,
            result.totals.instances_ok,
            result.totals.instances_failed,
            result.totals.instances_unanswered,
            result.instances_per_s,
            result.megabytes_per_s,
            store.p50,
            store.p90,
            store.p99,
            store.p999,
            store.max,
            result.latency_ms.association_setup.p50,
            result.latency_ms.commitment.as_ref().map(|commit| format!("{:.2}", commit.p50)).unwrap_or_else(|| "-".into()),
            result.loadgen.cpu_s_per_gb,
            result.loadgen.peak_rss_mib,
        );
    }
    html.push_str("</table></section>\n<section id=\"errors\"><h2>Statuses, rejections, aborts</h2><table><tr><th>target</th><th>load</th><th>C-STORE statuses</th><th>A-ASSOCIATE-RJ (result/source/reason)</th><th>aborts</th><th>commitment errors</th></tr>\n");
    for result in sorted(store_runs) {
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            escape(&result.target.label),
            format_number(load_level(result)),
            escape(&counters(&result.statuses)),
            escape(&counters(&result.rejections)),
            escape(&counters(&result.aborts)),
            escape(&counters(&result.commit_errors)),
        );
    }
    html.push_str("</table></section>\n");
    html
}

/// A mixed run's ingest beside its retrieval: inst/s and p99 ms ("-" without a store lane).
fn ingest_cells(result: &RunResult) -> (String, String) {
    if result.has_store_lane() {
        (
            format!("{:.1}", result.instances_per_s),
            format!("{:.2}", result.latency_ms.store.p99),
        )
    } else {
        ("-".to_string(), "-".to_string())
    }
}

/// The retrieval section of the HTML report: operations/s, latency and
/// instances received against load, the ingest of mixed runs beside them,
/// and a table of the retrieval runs.
fn retrieval_html(results: &[RunResult], x_label: &str) -> String {
    let mut html = String::from(
        "<section id=\"retrieval-vs-load\"><h2>Retrieval vs load</h2><p>Latency of a retrieval is measured from its request handed to the kernel to its final response; a C-MOVE's instances are those our own storage SCP received for it, a C-GET's those received on its association. In mixed runs the ingest beside the retrieval load is drawn dashed.</p><div class=\"charts\">\n",
    );
    let mut throughput = retrieval_series(results, |_, r| r.operations_per_s, "", false);
    throughput.extend(
        retrieval_series(
            results,
            |result, _| result.instances_per_s,
            " ingest inst/s",
            true,
        )
        .into_iter()
        .filter(|line| line.points.iter().any(|point| point.1 > 0.0)),
    );
    html.push_str(&line_chart(
        "chart-retrieval-operations",
        "Retrieval operations/s vs load",
        x_label,
        "operations/s (ingest: instances/s)",
        &throughput,
    ));
    let mut latency = retrieval_series(results, |_, r| r.latency_ms.operation.p50, " p50", true);
    latency.extend(retrieval_series(
        results,
        |_, r| r.latency_ms.operation.p99,
        " p99",
        false,
    ));
    html.push_str(&line_chart(
        "chart-retrieval-latency",
        "Retrieval latency vs load",
        x_label,
        "milliseconds",
        &latency,
    ));
    let received = retrieval_series(results, |_, r| r.instances_per_s, "", false);
    if received
        .iter()
        .any(|line| line.points.iter().any(|point| point.1 > 0.0))
    {
        html.push_str(&line_chart(
            "chart-retrieval-instances",
            "Instances received/s vs load (C-MOVE, C-GET)",
            x_label,
            "instances/s",
            &received,
        ));
    }
    html.push_str("</div><table><tr><th>target</th><th>operation</th><th>mode</th><th>load</th><th>s</th><th>ok</th><th>warning</th><th>failed</th><th>unanswered</th><th>ops/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>first response / sub-op p50 ms</th><th>matches/query</th><th>instances received</th><th>inst/s</th><th>MB/s</th><th>expectations differed</th><th>ingest inst/s</th><th>ingest p99 ms</th><th>statuses</th><th>aborts</th></tr>\n");
    for result in sorted(results) {
        let Some(retrieval) = &result.retrieval else {
            continue;
        };
        let totals = &retrieval.totals;
        let latency = &retrieval.latency_ms;
        let first = latency
            .first_response
            .as_ref()
            .or(latency.first_sub_operation.as_ref())
            .map_or_else(|| "-".to_string(), |first| format!("{:.2}", first.p50));
        let matches = retrieval
            .matches_per_query
            .as_ref()
            .map_or_else(|| "-".to_string(), |matches| format!("{:.1}", matches.mean));
        let (ingest, ingest_p99) = ingest_cells(result);
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{first}</td><td>{matches}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{} of {}</td><td>{ingest}</td><td>{ingest_p99}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            escape(&result.target.label),
            escape(&retrieval_label(retrieval)),
            escape(&retrieval.config.mode),
            format_number(load_level(result)),
            result.elapsed_s,
            totals.counts.operations_ok,
            totals.counts.operations_warning,
            totals.counts.operations_failed,
            totals.counts.operations_unanswered,
            retrieval.operations_per_s,
            latency.operation.p50,
            latency.operation.p90,
            latency.operation.p99,
            latency.operation.max,
            totals.counts.instances_received,
            retrieval.instances_per_s,
            retrieval.megabytes_per_s,
            totals.counts.expectations_differed,
            totals.counts.expectations_checked,
            escape(&counters(&retrieval.statuses)),
            escape(&counters(&retrieval.aborts)),
        );
    }
    html.push_str("</table></section>\n");
    html
}

/// The Markdown summary.
pub fn render_markdown(results: &[RunResult], title: &str, slo_p99_ms: f64) -> String {
    let x_label = x_axis_label(results);
    let mut md = format!("# {title}\n\n## Capacity\n\n");
    for sentence in capacity_sentences(&capacity(results, slo_p99_ms), slo_p99_ms, x_label) {
        let _ = writeln!(md, "- {sentence}");
    }
    for sentence in retrieval_sentences(&retrieval_capacity(results, slo_p99_ms), slo_p99_ms) {
        let _ = writeln!(md, "- {sentence}");
    }
    if results.iter().any(|result| result.retrieval.is_some()) {
        md.push_str("\n## Retrieval\n\n| target | operation | mode | load | ops/s | p50 ms | p99 ms | failed | unanswered | instances received/s | MB/s | expectations differed | ingest inst/s | ingest p99 ms |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for result in sorted(results) {
            let Some(retrieval) = &result.retrieval else {
                continue;
            };
            let operation = &retrieval.latency_ms.operation;
            let (ingest, ingest_p99) = ingest_cells(result);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {:.1} | {:.1} | {} of {} | {ingest} | {ingest_p99} |",
                result.target.label,
                retrieval_label(retrieval),
                retrieval.config.mode,
                format_number(load_level(result)),
                retrieval.operations_per_s,
                operation.p50,
                operation.p99,
                retrieval.totals.counts.operations_failed,
                retrieval.totals.counts.operations_unanswered,
                retrieval.instances_per_s,
                retrieval.megabytes_per_s,
                retrieval.totals.counts.expectations_differed,
                retrieval.totals.counts.expectations_checked,
            );
        }
    }
    let store_runs: &[RunResult] = &results
        .iter()
        .filter(|result| result.has_store_lane())
        .cloned()
        .collect::<Vec<_>>();
    if store_runs.is_empty() {
        return md;
    }
    md.push_str("\n## Runs\n\n| target | mode | load | inst/s | MB/s | p50 ms | p99 ms | p99.9 ms | failed | unanswered | rejections | aborts | loadgen CPU s/GB | loadgen RSS MiB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|\n");
    for result in sorted(store_runs) {
        let store = &result.latency_ms.store;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.2} | {:.0} |",
            result.target.label,
            result.load.mode,
            format_number(load_level(result)),
            result.instances_per_s,
            result.megabytes_per_s,
            store.p50,
            store.p99,
            store.p999,
            result.totals.instances_failed,
            result.totals.instances_unanswered,
            counters(&result.rejections),
            counters(&result.aborts),
            result.loadgen.cpu_s_per_gb,
            result.loadgen.peak_rss_mib,
        );
    }
    md
}

/// Writes `report.html` and `report.md` into `dir`.
pub fn write_report(
    results: &[RunResult],
    dir: &Path,
    title: &str,
    slo_p99_ms: f64,
) -> std::io::Result<()> {
    std::fs::write(
        dir.join("report.html"),
        render_html(results, title, slo_p99_ms),
    )?;
    std::fs::write(
        dir.join("report.md"),
        render_markdown(results, title, slo_p99_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{LoadConfig, Percentiles, Target};

    fn run(label: &str, associations: u64, instances_per_s: f64, p99: f64) -> RunResult {
        RunResult {
            target: Target {
                label: label.into(),
                ..Target::default()
            },
            load: LoadConfig {
                mode: "closed".into(),
                associations,
                ..LoadConfig::default()
            },
            instances_per_s,
            megabytes_per_s: instances_per_s * 0.5,
            latency_ms: crate::stats::Latencies {
                store: Percentiles {
                    count: 10,
                    p99,
                    ..Percentiles::default()
                },
                ..Default::default()
            },
            totals: crate::stats::Totals {
                instances_ok: 10,
                ..Default::default()
            },
            ..RunResult::default()
        }
    }

    #[test]
    fn knee_and_capacity_follow_the_definitions() {
        let results = vec![
            run("a", 1, 100.0, 5.0),
            run("a", 4, 380.0, 9.0),
            run("a", 16, 400.0, 40.0),
            run("a", 64, 401.0, 900.0),
        ];
        let capacity = capacity(&results, 100.0);
        assert_eq!(capacity.len(), 1);
        assert_eq!(capacity[0].knee_load, Some(4.0));
        assert_eq!(capacity[0].within_objective.map(|c| c.0), Some(16.0));
    }

    fn find_run(
        label: &str,
        associations: u64,
        operations_per_s: f64,
        p99: f64,
        mixed: bool,
    ) -> RunResult {
        let mut result = run(
            label,
            if mixed { 2 } else { 0 },
            if mixed { 50.0 } else { 0.0 },
            10.0,
        );
        result.retrieval = Some(RetrievalResult {
            config: crate::stats::RetrievalConfig {
                operation: "find".into(),
                level: "STUDY".into(),
                keys: vec!["patient-id".into()],
                mode: "closed".into(),
                associations,
                ..Default::default()
            },
            totals: crate::stats::RetrievalTotals {
                counts: crate::stats::RetrievalCounts {
                    operations_ok: 10,
                    ..Default::default()
                },
                ..Default::default()
            },
            operations_per_s,
            latency_ms: crate::stats::RetrievalLatencies {
                operation: Percentiles {
                    count: 10,
                    p99,
                    ..Percentiles::default()
                },
                ..Default::default()
            },
            ..Default::default()
        });
        result
    }

    #[test]
    fn retrieval_runs_are_charted_against_their_own_load_beside_ingest() {
        let results = vec![
            find_run("qr", 1, 100.0, 5.0, false),
            find_run("qr", 8, 700.0, 20.0, false),
            find_run("qr", 32, 750.0, 300.0, true),
        ];
        assert_eq!(load_level(&results[2]), 32.0);
        let capacity = retrieval_capacity(&results, 100.0);
        assert_eq!(capacity.len(), 1);
        assert_eq!(capacity[0].label, "qr: find STUDY by patient-id");
        assert_eq!(capacity[0].best_operations_per_s, 750.0);
        assert_eq!(
            capacity[0].within_objective.map(|c| (c.0, c.1)),
            Some((8.0, 700.0))
        );
        let html = render_html(&results, "t", 100.0);
        assert!(
            html.contains("chart-retrieval-operations") && html.contains("chart-retrieval-latency")
        );
        // Only the mixed run is an ingest run: its ingest is drawn beside.
        assert!(html.contains("qr find STUDY by patient-id ingest inst/s"));
        let markdown = render_markdown(&results, "t", 100.0);
        assert!(markdown.contains("## Retrieval"), "{markdown}");
        assert_eq!(
            markdown
                .matches("| qr | find STUDY by patient-id |")
                .count(),
            3,
            "{markdown}"
        );
        assert!(
            markdown.contains("sustains 700.0 operations/s"),
            "{markdown}"
        );
        // The store table has the one run with a store lane.
        let runs = markdown.split("## Runs").nth(1).unwrap_or_default();
        assert_eq!(runs.matches("| qr | closed |").count(), 1, "{markdown}");
        // Retrieval alone: no ingest sections.
        let alone = &results[..2];
        assert!(!render_markdown(alone, "t", 100.0).contains("## Runs"));
        let html = render_html(alone, "t", 100.0);
        assert!(!html.contains("throughput-vs-load") && html.trim_end().ends_with("</html>"));
        assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    }

    #[test]
    fn chart_has_one_polyline_per_series() {
        let series = vec![
            Series {
                name: "a".into(),
                points: vec![(1.0, 2.0), (4.0, 3.0)],
                dashed: false,
                colour: 0,
            },
            Series {
                name: "b<".into(),
                points: vec![(1.0, 1.0)],
                dashed: true,
                colour: 1,
            },
        ];
        let svg = line_chart("x", "t", "x", "y", &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("b&lt;"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
