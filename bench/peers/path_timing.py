#!/usr/bin/env python3
"""The tables of bench/peers/path-timing from its output directory (the
argument): each answered instance's steps, the flush rounds and index
transactions from serve.log (the timing log: targets sluice::ingest::timing
and sluice::index::timing at debug), percentiles in µs, the run's first and
last second left out; then, from perf's trace.data, every fdatasync of the
index's data file and of the segments on the run's loop device (dev.txt,
inodes.txt) and the device's flush requests: how often the two kinds
overlap and whether the block layer merged their flushes."""
import json, re, sys, os, collections

def pct(values, p):
    if not values:
        return 0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]

def row(name, values):
    if not values:
        return f"| {name} | - | - | - | - | 0 |"
    return f"| {name} | {pct(values,.5)} | {pct(values,.9)} | {pct(values,.99)} | {sum(values)/len(values):.0f} | {len(values)} |"

out = sys.argv[1]
log = os.path.join(out, "serve.log")
inst = []; rounds = []; txns = []; batches = []
for line in open(log):
    if "instance answered" in line:
        d = dict(re.findall(r"(\w+)=(\S+)", line))
        inst.append(d)
    elif "segment flush round ended" in line:
        rounds.append(dict(re.findall(r"(\w+)=(\S+)", line)))
    elif "index transaction" in line:
        txns.append(dict(re.findall(r"(\w+)=(\S+)", line)))
    elif "index batch submitted" in line:
        batches.append(dict(re.findall(r"(\w+)=(\S+)", line)))
# The middle of the run only: drop the first and last second.
if inst and "complete_at_us" in inst[0]:
    t0 = min(int(d["complete_at_us"]) for d in inst); t1 = max(int(d["complete_at_us"]) for d in inst)
    inst = [d for d in inst if t0 + 1e6 <= int(d["complete_at_us"]) <= t1 - 1e6]
    lo, hi = t0 + 1e6, t1 - 1e6
    rounds = [r for r in rounds if lo <= int(r["started_at_us"]) <= hi]
    txns = [t for t in txns if lo <= int(t["started_at_us"]) <= hi]
lg = json.load(open(os.path.join(out, "loadgen.json")))
print(f"## {out}: {lg['instances_per_s']:.0f} instances/s, loadgen p50 {lg['latency_ms']['store'].get('p50')} ms p99 {lg['latency_ms']['store'].get('p99')} ms; {open(os.path.join(out,'load.txt')).read().strip()}")
print()
print("| gap (µs) | p50 | p90 | p99 | mean | n |")
print("| --- | --- | --- | --- | --- | --- |")
g = lambda k: [int(d[k]) for d in inst if k in d]
for name, key in [("last byte -> index batch submitted", "submit_us"),
                  ("submitted -> writer committed", "commit_us"),
                  ("writer committed -> core took the answer", "hop_us"),
                  ("last byte -> record write done", "rename_us"),
                  ("write done -> flush round started", "flush_wait_us"),
                  ("flush round started -> ended", "flush_us"),
                  ("later of flush and index -> answer", "last_us"),
                  ("last byte -> answer", "total_us")]:
    print(row(name, g(key)))
idx_last = sum(1 for d in inst if d.get("index_last") == "true")
print(f"\nindex answer last: {idx_last} of {len(inst)} ({100*idx_last/max(1,len(inst)):.0f}%)")
# Flush side end: write done + wait + flush; index side end: submit + commit + hop.
flush_end = [int(d["rename_us"]) + int(d["flush_wait_us"]) + int(d["flush_us"]) for d in inst if "flush_us" in d]
index_end = [int(d["submit_us"]) + int(d["commit_us"]) + int(d["hop_us"]) for d in inst if "hop_us" in d]
print(row("last byte -> flush ended", flush_end)); print(row("last byte -> index answer taken", index_end))
print()
per_round = [int(r["instances"]) for r in rounds]
fl = [int(r["flush_us"]) for r in rounds]
print(f"flush rounds: {len(rounds)}, instances per round mean {sum(per_round)/max(1,len(per_round)):.2f}, distribution {sorted(collections.Counter(per_round).items())[:12]}")
one = sum(1 for n in per_round if n == 1)
print(f"one-instance rounds: {one} of {len(rounds)} ({100*one/max(1,len(rounds)):.0f}%); flush rounds per instance {len(rounds)/max(1,sum(per_round)):.3f}")
held = [int(r["held_us"]) for r in rounds if int(r.get("held_us", 0)) > 0]
print(f"rounds held by the flush window: {len(held)} of {len(rounds)}")
print(row("held (µs)", held))
print(row("flush round (µs)", fl))
stores = [int(t["stores"]) for t in txns]
print(f"index transactions per instance: {len(txns)/max(1,sum(int(t['stores']) for t in txns)):.3f}")
print(f"index transactions: {len(txns)}, with stores {sum(1 for s in stores if s)}, without {sum(1 for s in stores if not s)}; stores per storing txn mean {sum(stores)/max(1,sum(1 for s in stores if s)):.2f}; batches per txn mean {sum(int(t['batches']) for t in txns)/max(1,len(txns)):.2f}")
print(row("index txn (µs)", [int(t["txn_us"]) for t in txns]))
print(row("index commit (µs)", [int(t["commit_us"]) for t in txns]))
bw = sum(1 for b in batches if b.get("by_window") == "true")
print(f"store batches submitted: {len(batches)}, by the window's timer {bw}; instances per batch mean {sum(int(b['instances']) for b in batches)/max(1,len(batches)):.2f}")
# Overlap of index commits with flush rounds (from the logs).
ivs = sorted((int(r["started_at_us"]), int(r["started_at_us"]) + int(r["flush_us"])) for r in rounds)
def covered(a, b):
    tot = 0
    for s, e in ivs:
        if e <= a or s >= b: continue
        tot += min(b, e) - max(a, s)
    return min(tot, b - a)
c_tot = c_ov = 0
for t in txns:
    end = int(t["started_at_us"]) + int(t["txn_us"]); start = end - int(t["commit_us"])
    c_tot += end - start; c_ov += covered(start, end)
print(f"index commit time overlapped by a flush round: {100*c_ov/max(1,c_tot):.0f}% (logs)")

# ----- the kernel's view: fsyncs of the index and the segments, device flushes -----
trace = os.path.join(out, "trace.txt")
if os.path.exists(os.path.join(out, "trace.data")) and not os.path.exists(trace):
    os.system(f"perf script -i {out}/trace.data > {trace} 2>/dev/null")
if os.path.exists(trace):
    dev = open(os.path.join(out, "dev.txt")).read().strip() if os.path.exists(os.path.join(out, "dev.txt")) else "7,0"
    kinds = {}
    for line in open(os.path.join(out, "inodes.txt")):
        ino, path = line.split()
        if path.endswith("data.mdb"): kinds[ino] = "index"
        elif path.endswith(".seg"): kinds[ino] = "segment"
    open_ = {}; ivs = collections.defaultdict(list); flushes = []; t_first = t_last = None
    for line in open(trace):
        m = re.search(r"\s(\d+)\s+\[\d+\]\s+([\d.]+):\s+(\S+):\s+(.*)", line)
        if not m: continue
        tid, t, ev, rest = m.group(1), float(m.group(2)), m.group(3), m.group(4)
        if ev.startswith("ext4:ext4_sync_file") and f"dev {dev} " in rest:
            ino = re.search(r"ino (\d+)", rest).group(1)
            kind = kinds.get(ino, "other")
            if ev.endswith("enter"): open_[tid] = (t, ino)
            elif tid in open_:
                s, i2 = open_.pop(tid); ivs[kinds.get(i2, "other")].append((s, t, i2))
        elif ev == "block:block_rq_issue" and rest.startswith(f"{dev} FF"):
            flushes.append(t)
        if ev.startswith("ext4") or ev.startswith("block"):
            t_first = t if t_first is None else t_first; t_last = t
    span = (t_last - t_first) if t_first else 1
    print(f"\nkernel trace over {span:.2f} s: fsyncs (datasync) per second: " + ", ".join(f"{k} {len(v)/span:.0f}" for k, v in ivs.items()) + f"; loop device flushes {len(flushes)/span:.0f}/s")
    for k, v in ivs.items():
        print(row(f"fdatasync of {k} (µs)", [int((e - s) * 1e6) for s, e, _ in v]))
    seg = sorted(ivs.get("segment", []))
    def overlaps(s, e, others):
        return any(os_ < e and oe > s for os_, oe, _ in others)
    idx = ivs.get("index", [])
    n_ov = sum(1 for s, e, _ in idx if overlaps(s, e, seg))
    print(f"index fdatasyncs overlapping a segment fdatasync: {n_ov} of {len(idx)} ({100*n_ov/max(1,len(idx)):.0f}%)")
    # Device flushes issued during each overlapping pair's union: 1 = merged.
    import bisect
    fl = sorted(flushes); per_pair = []
    for s, e, _ in idx:
        for os_, oe, _ in seg:
            if os_ < e and oe > s:
                a, b = min(s, os_), max(e, oe)
                per_pair.append(bisect.bisect_right(fl, b) - bisect.bisect_left(fl, a))
                break
    if per_pair:
        print(f"loop flushes issued while an index and a segment fdatasync overlapped: {sorted(collections.Counter(per_pair).items())}")
    total_fsyncs = sum(len(v) for v in ivs.values())
    # Instances answered during the trace (its span, by their completion).
    rate = len(inst) / max(1e-9, (max(int(d["complete_at_us"]) for d in inst) - min(int(d["complete_at_us"]) for d in inst)) / 1e6) if inst else 0
    if rate:
        print("fdatasyncs per instance (trace rate over the log's rate): " + ", ".join(f"{k} {len(v)/span/rate:.3f}" for k, v in ivs.items()) + f"; all {total_fsyncs/span/rate:.3f}; device flushes {len(flushes)/span/rate:.3f}")
    print(f"fdatasyncs {total_fsyncs}, loop device flushes {len(flushes)}: {len(flushes)/max(1,total_fsyncs):.2f} flushes per fdatasync")
