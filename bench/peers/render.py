#!/usr/bin/env python3
"""Renders bench/peers results (results.json) as Markdown with SVG charts.

    python3 bench/peers/render.py docs/benchmarks/results.json docs/benchmarks.md

The generated part of the Markdown file sits between the markers
`<!-- results:begin -->` and `<!-- results:end -->`; text outside them (the
analysis written by hand) is kept. Charts go beside results.json.

Medians of the repetitions with min and max; ratios of Sluice (io_uring) to
each peer from the same run; the issue's targets checked against them.
Charts are plain SVG written here (no plotting dependency to install).
"""
import json
import os
import statistics
import sys
from html import escape

SLUICE = "sluice-uring"
ORDER = ["sluice-uring", "sluice-segments", "sluice-baseline", "sluice-portable", "sluice-metrics",
         "sluice-audit", "orthanc", "storescp", "dicom-rs", "speed-of-light",
         "speed-of-light-segments"]
COLORS = {"sluice-uring": "#1f6feb", "sluice-portable": "#6ea8fe",
          "sluice-baseline": "#0a3069", "orthanc": "#d9822b",
          "storescp": "#3fa34d", "dicom-rs": "#a371f7", "speed-of-light": "#8b949e",
          "speed-of-light-segments": "#57606a"}


def groups(results):
    """{workload: {receiver: [runs]}} in plan order (the idle-associations
    run has its own section)."""
    table = {}
    for workload in results["workloads"]:
        table[workload["name"]] = {}
    for run in results["runs"]:
        if run["workload"] == "idle-associations":
            continue
        table.setdefault(run["workload"], {}).setdefault(run["receiver"], []).append(run)
    return table


def scale_section(results):
    runs = [run for run in results["runs"] if run["workload"] == "idle-associations"]
    if not runs:
        return []
    run = runs[0]
    return [
        "## Many associations at once",
        "",
        f"Sluice (io_uring) with {run['idle_associations']:,} idle associations open "
        f"(raw A-ASSOCIATE-RQ from one process, established in {run['idle_connect_s']:.1f} s) "
        f"while 16 more store 512 KB instances:",
        "",
        f"- idle associations accepted: {run['idle_accepted']:,} of "
        f"{run['idle_associations']:,}; still served at the end (A-RELEASE answered): "
        f"{run['idle_released']:,}",
        f"- the 16 storing associations meanwhile: {run['instances_per_s']:.0f} instances/s, "
        f"p99 {run['latency_ms'].get('p99') or 0:.1f} ms, every instance landed: "
        f"{'yes' if run['stored_files'] >= run['instances'] else '**no**'}",
        f"- server resident memory: {run['rss_before_mib']:.0f} MiB before, "
        f"{run['rss_with_idle_mib']:.0f} MiB with the idle associations: "
        f"**{run['kib_per_idle_association']:.1f} KiB per idle association** (target: at most 32)",
        "",
    ]


def summary(runs, key, sub=None):
    values = [(run[key].get(sub) if sub else run.get(key)) for run in runs]
    values = [value for value in values if value is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(triple, digits=0):
    if triple is None:
        return "–"
    median, low, high = triple
    if low == high:
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def median_of(table, workload, receiver, key="instances_per_s", sub=None):
    runs = table.get(workload, {}).get(receiver)
    if not runs:
        return None
    triple = summary(runs, key, sub)
    return triple[0] if triple else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def bar_chart(path, title, rows, unit):
    """Horizontal bars: rows = [(label, value, low, high, color)]."""
    width, left, bar, gap = 760, 210, 18, 8
    height = 40 + len(rows) * (bar + gap) + 20
    top = max([row[3] or row[1] or 0 for row in rows] + [1e-9])
    scale = (width - left - 90) / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    for index, (label, value, low, high, color) in enumerate(rows):
        y = 36 + index * (bar + gap)
        parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{escape(label)}</text>')
        if value is None:
            continue
        parts.append(f'<rect x="{left}" y="{y}" width="{value * scale:.1f}" height="{bar}" '
                     f'fill="{color}"/>')
        if low is not None and high is not None and high > low:
            parts.append(f'<line x1="{left + low * scale:.1f}" x2="{left + high * scale:.1f}" '
                         f'y1="{y + bar / 2}" y2="{y + bar / 2}" stroke="black"/>')
        parts.append(f'<text x="{left + value * scale + 6:.1f}" y="{y + 13}">'
                     f'{value:,.0f} {escape(unit)}</text>')
    parts.append("</svg>")
    with open(path, "w") as file:
        file.write("\n".join(parts) + "\n")


def targets(table, results):
    """The issue's targets, each with the measured figure and a verdict."""
    def line(name, value, goal, ok):
        shown = "not measured" if value is None else value
        if value is None:
            verdict = "–"
        elif ok is None:
            verdict = "observed (a peer, not a Sluice target)"
        else:
            verdict = "met" if ok else "**missed**"
        return f"| {name} | {goal} | {shown} | {verdict} |"

    rows = ["| target | goal | measured (medians, this run) | verdict |",
            "| --- | --- | --- | --- |"]
    s16 = median_of(table, "ct-512k-16", SLUICE)
    for peer, goal in (("orthanc", 3.0), ("storescp", 1.5)):
        value = ratio(s16, median_of(table, "ct-512k-16", peer))
        rows.append(line(f"512 KB, 16 associations: Sluice / {peer}",
                         None if value is None else f"{value:.2f}x", f">= {goal}x",
                         value is not None and value >= goal))
    cpu = median_of(table, "ct-512k-16", SLUICE, "cpu_s_per_gb")
    rows.append(line("Server CPU per GB (512 KB, 16 associations)",
                     None if cpu is None else f"{cpu:.2f} s/GB", "<= 0.5 s/GB",
                     cpu is not None and cpu <= 0.5))
    value = ratio(median_of(table, "small-40k-16", SLUICE),
                  median_of(table, "small-40k-16", "orthanc"))
    rows.append(line("40 KB, 16 associations: Sluice / Orthanc",
                     None if value is None else f"{value:.2f}x", ">= 5x",
                     value is not None and value >= 5))
    value = ratio(s16, median_of(table, "ct-512k-16", "speed-of-light"))
    rows.append(line("512 KB, 16 associations: share of the speed-of-light receiver",
                     None if value is None else f"{value:.0%}", ">= 70%",
                     value is not None and value >= 0.7))
    shipped = median_of(table, "storescu-nagle-1", SLUICE)
    tuned = median_of(table, "storescu-tuned-1", SLUICE)
    value = ratio(tuned, shipped)
    rows.append(line("storescu as shipped, 1 association: Sluice's slowdown vs tuned",
                     None if value is None else f"{value:.2f}x", "<= 2x",
                     value is not None and value <= 2))
    for peer in ("orthanc", "storescp", "dicom-rs"):
        value = ratio(median_of(table, "storescu-tuned-1", peer),
                      median_of(table, "storescu-nagle-1", peer))
        if value is not None:
            rows.append(line(f"storescu as shipped, 1 association: {peer}'s slowdown vs tuned",
                             f"{value:.2f}x", "(the issue expects > 10x)", None))
    scale = [run for run in results["runs"] if run["workload"] == "idle-associations"]
    if scale:
        run = scale[0]
        served = run["idle_accepted"] == run["idle_associations"] == run["idle_released"]
        rows.append(line(f"{run['idle_associations']:,} associations at once: all served, "
                         "memory per idle association",
                         f"{'all served' if served else 'NOT all served'}, "
                         f"{run['kib_per_idle_association']:.1f} KiB",
                         "all served, <= 32 KiB",
                         served and run["kib_per_idle_association"] <= 32))
    return rows


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def render(results, markdown_path, assets_dir):
    table = groups(results)
    titles = {workload["name"]: workload["title"] for workload in results["workloads"]}
    link_dir = os.path.relpath(assets_dir, os.path.dirname(os.path.abspath(markdown_path)))
    lines = [
        BEGIN,
        "<!-- Generated by bench/peers/render.py from results.json: edit outside the markers. -->",
        "",
        f"Machine: {results['machine']}. Every figure below comes from one run of "
        f"`bench/peers/run` ({results['repeat']} interleaved repetitions, "
        f"{results['seconds_per_run']:g} s per loadgen run, "
        f"{results['elapsed_s'] / 60:.0f} min in all): the median, with the "
        "smallest and largest repetition in brackets. The machine is shared and "
        "noisy; compare ratios within this run, not with other runs.",
        "",
        "## The machine's ceilings (same run)",
        "",
    ]
    ceilings = results["ceilings"]
    iperf = ceilings.get("iperf3_loopback", {})
    lines += [
        f"- Loopback TCP (iperf3): {iperf.get('1_streams_gbit_s', 0):.1f} Gbit/s on one "
        f"stream, {iperf.get('16_streams_gbit_s', 0):.1f} Gbit/s on 16.",
        f"- Durable sequential write (dd, fdatasync at the end): "
        f"{ceilings.get('durable_write_mb_s', 0):.0f} MB/s.",
        "- Storage: " + ("a new journaled ext4 for every run (a sparse image in the "
                         "work directory on a loop device with direct I/O), so every "
                         "receiver starts on the same clean file system."
                         if ceilings.get("fresh_filesystem_per_run") else
                         "the work directory itself (`--no-fresh-fs`)."),
        "- The speed-of-light receiver (`bench/src/bin/speed_of_light.rs`): raw frames "
        "into files with Sluice's durability (file fdatasync, rename, directory "
        "fsync, then the acknowledgement), no DICOM and no index. It bounds what "
        "any DICOM receiver with that durability could do here.",
        "",
        "## Targets",
        "",
    ]
    lines += targets(table, results)
    lines += [""] + scale_section(results)
    lines += ["## Results", ""]
    for workload, by_receiver in table.items():
        if not by_receiver:
            continue
        lines += [f"### {titles.get(workload, workload)} (`{workload}`)", "",
                  "| receiver | instances/s | MB/s | p50 ms | p99 ms | p99.9 ms | "
                  "server CPU s/GB | peak RSS MiB | all landed | success means durable | "
                  "Sluice / this |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
        sluice = median_of(table, workload, SLUICE)
        chart_rows = []
        # The known receivers in their usual order, then any other this run
        # measured (sluice-metrics, sluice-audit, ...) in name order: a
        # receiver missing from ORDER must not vanish from the table.
        others = sorted(name for name in by_receiver if name not in ORDER)
        for receiver in ORDER + others:
            runs = by_receiver.get(receiver)
            if not runs:
                continue
            speed = summary(runs, "instances_per_s")
            relative = ratio(sluice, speed[0]) if receiver != SLUICE else None
            landed = all(run["all_landed"] for run in runs)
            lines.append(
                f"| {receiver} | {fmt(speed)} | {fmt(summary(runs, 'mb_per_s'))} | "
                f"{fmt(summary(runs, 'latency_ms', 'p50'), 1)} | "
                f"{fmt(summary(runs, 'latency_ms', 'p99'), 1)} | "
                f"{fmt(summary(runs, 'latency_ms', 'p999'), 1)} | "
                f"{fmt(summary(runs, 'cpu_s_per_gb'), 2)} | "
                f"{fmt(summary(runs, 'peak_rss_mib'))} | "
                f"{'yes' if landed else '**no**'} | "
                f"{results['durability'].get(receiver, '?')} | "
                f"{'–' if relative is None else f'{relative:.2f}x'} |")
            chart_rows.append((receiver, speed[0], speed[1], speed[2],
                               COLORS.get(receiver, "#888")))
        chart = f"{workload}.svg"
        bar_chart(os.path.join(assets_dir, chart), titles.get(workload, workload),
                  chart_rows, "inst/s")
        lines += ["", f"![{titles.get(workload, workload)}]({link_dir}/{chart})", ""]
    lines.append(END)
    generated = "\n".join(lines)
    try:
        with open(markdown_path) as file:
            existing = file.read()
    except FileNotFoundError:
        existing = "# Benchmarks: Sluice side by side\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + generated + tail
    else:
        text = existing.rstrip("\n") + "\n\n" + generated + "\n"
    with open(markdown_path, "w") as file:
        file.write(text)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as file:
        results = json.load(file)
    render(results, sys.argv[2], os.path.dirname(os.path.abspath(sys.argv[1])))


if __name__ == "__main__":
    main()
