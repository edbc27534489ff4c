#!/usr/bin/env python3
"""Query/Retrieve side by side: Sluice, Orthanc and DCMTK dcmqrscp as Q/R
SCPs, in one run on one machine, with the machine's sender ceiling.

Usage (from the repository root; `bench/peers/qr` builds first, then calls
this):

    python3 bench/peers/qr.py [--short] [--repeat 3] [--find-instances 100000]
        [--index-instances 1000000,10000000] [--queries 200]
        [--peers sluice,orthanc,dcmqrscp] [--work-dir DIR] [--out-dir docs/benchmarks]
        [--orthanc-index-instances 1000000] [--check-orthanc-index 2000]

Three parts, each interleaved (every peer once per repetition, in rotating
order) so drift on a shared machine spreads evenly:

1. C-FIND latency. The same archive (bench/src/bin/qr_load.rs: 100
   instances per study, 2 studies per patient, 1,000 surnames) is written
   as Part 10 files and stored by C-STORE (DCMTK storescu) into every peer;
   then bench's qr_client sends `--queries` C-FINDs of each kind (study
   level by Patient ID, by name wildcard, by a one-week date range; series
   and image level by Patient ID, relational; series level under a Study
   Instance UID, hierarchical) on one association and reports p50/p90/p99.
   Sluice alone is also measured on larger archives whose index qr_load
   writes directly (`--index-instances`; every entry a hard link to one
   file, see qr_load.rs), because C-STORE cannot load 10 M instances into
   each peer within a session; there by two servers over the same index,
   one with exact person-name matching and one case-insensitive (the name
   queries only, and PATIENT level by name too, NAME_KINDS), and with
   `--orthanc-index-instances` Orthanc too, its SQLite index written
   directly by orthanc_index.py from the same generator, all in one
   rotating order per repetition. `--check-orthanc-index N` first checks
   that writer against Orthanc itself (N instances by C-STORE into one
   Orthanc, written for another: equal answers, statistics and index rows,
   or the run fails). `--find-instances 0` skips the C-STORE loads.
2. C-MOVE and C-GET throughput: a study of 512 KB CT instances and one of
   40 KB instances, stored into Sluice and Orthanc, moved to DCMTK storescp
   (one association at a time, and with `--fork`: a process per
   association, so a move's parallel associations are taken at once)
   and to a second Sluice, and fetched with C-GET by qr_client (which only
   counts the bytes); beside them the sender's speed of light: what
   Sluice stored (on the segments layout, the default of
   `--retrieve-layout`, the used part of each segment; on files, its
   objects/) read and written to a loopback socket that drains them
   (qr_client read-send / sink), each of read-send's ways of moving them
   (`--ceiling-vias`: serial reads and writes, reader threads ahead of the
   writer, sendfile, splice) warm and, with `--ceiling-cold`, cold; the
   best of them is the ceiling. Then the destination's own receive
   ceiling (DCMTK storescu of the same files into storescp).
   `--drop-caches` (root) drops the page cache before each of them, so
   every one reads from the disk: with a set of a few hundred MB
   (`--retrieve-ct`, `--retrieve-small`) that is the ceiling the
   retrievals are compared with, timed in seconds. `--baseline-sluice
   PATH` with `baseline` among `--retrieve-peers` runs another build as
   one more source, interleaved with the others (before/after in one run).
3. Ingest beside retrieval: sluice-loadgen storing 512 KB CT instances
   into Sluice alone, then while qr_client fetches the 512 KB study with
   C-GET in a loop from the same Sluice; the ingest rate with retrieval
   over the rate alone.

Results: JSON (every run) and a Markdown section of docs/benchmarks.md
between the markers `<!-- qr:begin -->` and `<!-- qr:end -->`.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import CLOCK_TICKS, REPO, free_port, machine, tool, tree_cpu_seconds  # noqa: E402
import orthanc_index  # noqa: E402

# Name queries on the indexes qr_load writes: (kind, label, model, Sluice's
# person-name matching). The capitals only case-insensitive matching finds.
NAME_KINDS = [
    ("patient-name", "PATIENT by name wildcard (Surname*)", "patient", "exact"),
    ("study-name-upper", "STUDY by name wildcard in capitals (SURNAME*)", "study",
     "case-insensitive"),
    ("patient-name-upper", "PATIENT by name wildcard in capitals (SURNAME*)", "patient",
     "case-insensitive"),
]

# qr_client read-send's ways of moving the stored bytes into the socket
# (the sender's ceiling is the best of them).
VIAS = ["serial", "threads", "sendfile", "splice"]

QUERY_KINDS = [
    ("study-pid", "STUDY by Patient ID", False),
    ("study-name", "STUDY by name wildcard (Surname*)", False),
    ("study-date", "STUDY by one-week date range", False),
    ("series-study", "SERIES under a Study UID", False),
    ("series-pid", "SERIES by Patient ID (relational)", True),
    ("image-pid", "IMAGE by Patient ID (relational)", True),
]


def run_json(command, timeout=3600, env=None):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


class Peer:
    """One Q/R SCP (or destination) process on loopback."""

    def __init__(self, kind, work_dir, binaries, ae=None, remote_aes=None, data_dir=None,
                 keep=False, extra=(), binary=None, label=None):
        self.kind = kind
        self.ae = ae or {"orthanc": "ORTHANC", "dcmqrscp": "QRSCP", "storescp": "STORESCP"}.get(
            kind, "SLUICE")
        # `label` names the config and log files (default: the AE title),
        # for peers of one kind and AE title side by side.
        label = label or self.ae
        self.port = free_port()
        self.http_port = free_port()
        self.dir = data_dir or os.path.join(work_dir, f"peer-{kind}-{label}")
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir, exist_ok=True)
        remote_aes = remote_aes or {}
        env = dict(os.environ, TCP_NODELAY="1")
        log_path = os.path.join(work_dir, f"{kind}-{label}.log")
        self.log_path = log_path
        if kind == "sluice":
            command = [binary or binaries["sluice"], "serve", "--data-dir", self.dir, "--port",
                       str(self.port), "--bind", "127.0.0.1", "--free-space-floor", "0",
                       "--ae-title", self.ae, "--index-map-size", "256GiB",
                       "--query-find-results-max", "10000000",
                       "--max-associations", "1000", "--max-associations-per-calling-ae", "1000"]
            for name, port in remote_aes.items():
                command += ["--remote-ae", f"{name}=127.0.0.1:{port}"]
            command += list(extra)
        elif kind == "orthanc":
            config = os.path.join(work_dir, f"orthanc-{label}.json")
            with open(config, "w") as file:
                json.dump({
                    "Name": "qr-bench", "StorageDirectory": self.dir, "IndexDirectory": self.dir,
                    "StorageCompression": False, "HttpServerEnabled": True,
                    "HttpPort": self.http_port, "RemoteAccessAllowed": False,
                    "DicomServerEnabled": True, "DicomAet": self.ae, "DicomPort": self.port,
                    "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
                    "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True,
                    "DicomAlwaysAllowGet": True, "DicomThreadsCount": os.cpu_count(),
                    "LimitFindResults": 0, "LimitFindInstances": 0,
                    "DicomModalities": {name.lower(): [name, "127.0.0.1", port]
                                        for name, port in remote_aes.items()},
                    "Plugins": [], "LuaScripts": [],
                }, file)
            command = ["/usr/sbin/Orthanc", config]
        elif kind == "dcmqrscp":
            config = os.path.join(work_dir, "dcmqrscp.cfg")
            with open(config, "w") as file:
                file.write(f"NetworkTCPPort = {self.port}\nMaxPDUSize = 16384\n"
                           "MaxAssociations = 16\n\nHostTable BEGIN\nHostTable END\n\n"
                           "VendorTable BEGIN\nVendorTable END\n\nAETable BEGIN\n"
                           f"{self.ae} {self.dir} RW (100000, 1000000mb) ANY\nAETable END\n")
            command = [tool("dcmqrscp"), "-c", config, "--disable-host-lookup"]
        elif kind == "storescp":
            command = [tool("storescp"), "-aet", self.ae, "-od", self.dir, *extra,
                       str(self.port)]
        else:
            raise ValueError(kind)
        self.log = open(log_path, "a")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env)
        # Start-up recovery checks every indexed file unless the last stop
        # was clean (recovery/clean_stop.rs): more than 10 minutes at 8 M
        # instances on a loaded machine the first time.
        deadline = time.time() + 3600
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{kind} exited at start (log: {log_path})")
            if subprocess.run([tool("echoscu"), "-aec", self.ae, "127.0.0.1", str(self.port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{kind} did not answer C-ECHO")
        self.cpu_before = tree_cpu_seconds(self.process.pid)

    def cpu_seconds(self):
        after = tree_cpu_seconds(self.process.pid)
        return sum(after) - sum(self.cpu_before)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def store_files(peer, directory):
    """Stores every file of `directory` into `peer` with DCMTK storescu."""
    started = time.time()
    result = subprocess.run(
        [tool("storescu"), "-aec", peer.ae, "+sd", "+r", "127.0.0.1", str(peer.port), directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TCP_NODELAY="1"), timeout=24 * 3600)
    if result.returncode != 0:
        raise RuntimeError(f"storescu into {peer.kind} failed: {result.stderr[-1000:]}")
    return time.time() - started


def queries_file(binaries, work_dir, instances, kind, count):
    path = os.path.join(work_dir, f"queries-{instances}-{kind}.txt")
    with open(path, "w") as file:
        subprocess.run([binaries["qr_load"], "queries", str(instances), kind, str(count)],
                       stdout=file, check=True)
    return path


def find_latency(binaries, peer, queries, count, relational, model="study"):
    command = [binaries["qr_client"], "find", str(peer.port), peer.ae, model, queries,
               str(count)]
    if relational:
        command.append("--relational")
    load_before = os.getloadavg()[0]
    try:
        result = run_json(command, timeout=3600)
    except RuntimeError as error:
        result = {"error": str(error)[-300:]}
    result["load_average_1m"] = [load_before, os.getloadavg()[0]]
    return result


def drop_caches():
    """Writes dirty pages back and drops the page cache (root only: the
    retrieval part's `--drop-caches`), so the next read comes from the disk."""
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as file:
        file.write("3\n")


def machine_busy_seconds():
    """CPU seconds every CPU of the machine spent busy so far (/proc/stat:
    everything but idle and iowait), so a sender's io-wq workers and the
    requester count as well as the server's own threads."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def retrieve(binaries, peer, operation, study_uid, destination=None, window=1):
    """One C-MOVE or C-GET by qr_client; a C-GET with `window` > 1 proposes
    an Asynchronous Operations Window of that many sub-operations (the
    outcome's "window" is what the SCP answered: 1 when none). The outcome
    also has qr_client's CPU seconds and the whole machine's busy seconds
    over the run."""
    keys = f"QueryRetrieveLevel=STUDY;StudyInstanceUID={study_uid}"
    command = [binaries["qr_client"], operation, str(peer.port), peer.ae, "study", keys]
    if destination:
        command.append(destination)
    if window > 1:
        command += ["--window", str(window)]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = machine_busy_seconds()
    outcome = run_json(command, timeout=3600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcome["client_cpu_s"] = (after.ru_utime + after.ru_stime
                               - children.ru_utime - children.ru_stime)
    outcome["machine_busy_s"] = machine_busy_seconds() - busy
    return outcome


def study_uid(files_dir):
    """The Study Instance UID of the first file of `files_dir` (every file
    of a retrieve set is in one study)."""
    first = sorted(os.listdir(files_dir))[0]
    output = subprocess.run([tool("dcmdump"), "+P", "0020,000d", os.path.join(files_dir, first)],
                            stdout=subprocess.PIPE, text=True, check=True).stdout
    return output.split("[", 1)[1].split("]", 1)[0]


def stored_ranges(binaries, peer):
    """What a Sluice peer stored, as read-send list lines: every file of
    its objects/ (files layout), or the used part of each of its segments
    (`path<TAB>0<TAB>bytes`, from `sluice stats`: live plus dead bytes,
    the records as written, without the preallocated tail)."""
    objects = sorted(os.path.join(root, file_name)
                     for root, _, names in os.walk(os.path.join(peer.dir, "objects"))
                     for file_name in names)
    if objects:
        return objects
    output = subprocess.run([binaries["sluice"], "stats", "--data-dir", peer.dir],
                            stdout=subprocess.PIPE, text=True, check=True).stdout
    lines, in_segments = [], False
    for line in output.splitlines():
        fields = line.split()
        if line.startswith("segments "):
            in_segments = True
        elif in_segments and len(fields) == 6 and fields[0] != "SEGMENT" and \
                fields[2].isdigit():
            used = int(fields[3]) + int(fields[5])
            if used:
                lines.append(f"{os.path.join(peer.dir, 'segments', fields[0] + '.seg')}\t0\t{used}")
    if not lines:
        raise RuntimeError(f"no stored files or segments under {peer.dir}")
    return lines


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


# ----- Orthanc's index written directly (orthanc_index.py) -----

def orthanc_written(binaries, work_dir, instances, data_dir):
    """Orthanc's index of the archive's `instances` written directly into
    `data_dir` (once: a marker keeps it), after an Orthanc made the empty
    index there and another stored the archive's instance 0 by C-STORE as
    the template. Returns the load's figures."""
    marker = os.path.join(data_dir, "qr-loaded")
    if os.path.exists(marker):
        with open(marker) as file:
            return json.load(file)
    files = os.path.join(work_dir, "orthanc-template-files")
    shutil.rmtree(files, ignore_errors=True)
    subprocess.run([binaries["qr_load"], "files", files, "1", "128"], check=True,
                   stdout=subprocess.DEVNULL)
    template = Peer("orthanc", work_dir, binaries, label="TEMPLATE",
                    data_dir=os.path.join(work_dir, "orthanc-template"))
    try:
        store_files(template, files)
    finally:
        template.stop()
    links = data_dir + "-links"
    shutil.rmtree(links, ignore_errors=True)
    Peer("orthanc", work_dir, binaries, data_dir=data_dir,
         label=os.path.basename(data_dir)).stop()
    load = orthanc_index.write(data_dir, template.dir, binaries["qr_load"], instances, 128, links)
    print(json.dumps({"load": f"orthanc-index-{instances}", **load}), flush=True)
    with open(marker, "w") as file:
        json.dump(load, file)
    return load


def warm(paths):
    """Reads every file under `paths` once (into the page cache)."""
    for path in paths:
        names = [path] if os.path.isfile(path) else [
            os.path.join(root, name) for root, _, files in os.walk(path) for name in files]
        for name in names:
            with open(name, "rb") as file:
                while file.read(1 << 22):
                    pass


def check_matches(results, instances):
    """Orthanc's matches per query against Sluice's on the same archive
    (the same queries): the capitals kinds against Sluice's
    case-insensitive server, the others against the exact one. Raises on a
    difference."""
    expected = {}
    for r in results:
        if r["instances"] == instances and r["peer"] == "sluice" and "error" not in r:
            expected.setdefault((r["query"], r["person_name_matching"]), r["matches_per_query"])
    for r in results:
        if r["instances"] != instances or r["peer"] != "orthanc":
            continue
        mode = "case-insensitive" if r["query"].endswith("-upper") else "exact"
        want = expected.get((r["query"], mode))
        if "error" in r or want is None or r["matches_per_query"] != want:
            raise RuntimeError(f"Orthanc at {instances:,}: {r['query']} gave "
                               f"{r.get('matches_per_query', r.get('error'))} matches per "
                               f"query, Sluice {want}")


def find_answers(peer, model, queries_path, relational):
    """Every answer of every query of `queries_path` from `peer` (pynetdicom,
    one association), each answer as the sorted (tag, value) pairs it holds."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
    sop_class = {"study": "1.2.840.10008.5.1.4.1.2.2.1",
                 "patient": "1.2.840.10008.5.1.4.1.2.1.1"}[model]
    ae = AE(ae_title="QRCHECK")
    ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
    negotiation = []
    if relational:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = sop_class
        item.service_class_application_information = b"\x01"
        negotiation.append(item)
    association = ae.associate("127.0.0.1", peer.port, ae_title=peer.ae, ext_neg=negotiation)
    if not association.is_established:
        raise RuntimeError(f"no association with {peer.ae}")
    answers = []
    try:
        for line in open(queries_path).read().splitlines():
            identifier = Dataset()
            for part in line.split(";"):
                keyword, value = part.split("=", 1)
                setattr(identifier, keyword, value)
            matches = []
            for status, answer in association.send_c_find(identifier, sop_class):
                if status is None:
                    raise RuntimeError(f"{peer.ae}: no C-FIND response")
                if status.Status in (0xFF00, 0xFF01):
                    matches.append(sorted((str(e.tag), str(e.value)) for e in answer))
                elif status.Status != 0:
                    raise RuntimeError(f"{peer.ae}: C-FIND status {status.Status:04X}")
            answers.append(sorted(matches))
    finally:
        association.release()
    return answers


def check_orthanc_index(binaries, work_dir, instances, queries):
    """The writer against Orthanc itself: the archive's `instances` stored
    by C-STORE into one Orthanc and written directly for another; their
    REST statistics and resource lists, every query kind's C-FIND answers
    (all keys), and their indexes row by row (orthanc_index.compare_databases)
    must be equal, the written one's log free of errors, and no stored file
    opened by a C-FIND (strace, when there). Raises with the differences."""
    import logging
    import urllib.request
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)
    files_dir = os.path.join(work_dir, f"find-files-{instances}")
    if not os.path.isdir(files_dir) or len(os.listdir(files_dir)) != instances:
        shutil.rmtree(files_dir, ignore_errors=True)
        subprocess.run([binaries["qr_load"], "files", files_dir, str(instances), "128"],
                       check=True, stdout=subprocess.DEVNULL)
    written_dir = os.path.join(work_dir, f"orthanc-check-written-{instances}")
    shutil.rmtree(written_dir, ignore_errors=True)
    load = orthanc_written(binaries, work_dir, instances, written_dir)
    stored = Peer("orthanc", work_dir, binaries, label="CHECK-STORED")
    written = None
    problems, report = [], {"instances": instances, "written": load}
    try:
        # In file-name order (storescu +sd sends in directory order): the
        # order the writer creates resources in, and the archive gives a
        # study's series different Study Descriptions, of which Orthanc
        # keeps the first one received.
        started = time.time()
        names = sorted(os.listdir(files_dir))
        subprocess.run([tool("storescu"), "-aec", stored.ae, "127.0.0.1", str(stored.port)]
                       + [os.path.join(files_dir, name) for name in names], check=True,
                       stdout=subprocess.DEVNULL, env=dict(os.environ, TCP_NODELAY="1"))
        report["stored_s"] = time.time() - started
        written = Peer("orthanc", work_dir, binaries, data_dir=written_dir, keep=True,
                       label="CHECK-WRITTEN")

        def rest(peer, path):
            with urllib.request.urlopen(f"http://127.0.0.1:{peer.http_port}{path}") as answer:
                value = json.load(answer)
            return sorted(value) if isinstance(value, list) else value
        for path in ["/statistics", "/patients", "/studies", "/series", "/instances"]:
            if rest(stored, path) != rest(written, path):
                problems.append(f"REST {path} differs")
        report["statistics"] = rest(written, "/statistics")
        strace = None
        trace_path = os.path.join(work_dir, "orthanc-check-strace.txt")
        if shutil.which("strace"):
            strace = subprocess.Popen(["strace", "-f", "-e", "trace=open,openat", "-o",
                                       trace_path, "-p", str(written.process.pid)],
                                      stderr=subprocess.DEVNULL)
            time.sleep(1)
        kinds = [(kind, "study", relational) for kind, _, relational in QUERY_KINDS]
        kinds += [(kind, model, False) for kind, _, model, _ in NAME_KINDS]
        report["matches"] = {}
        for kind, model, relational in kinds:
            path = queries_file(binaries, work_dir, instances, kind, queries)
            by_store = find_answers(stored, model, path, relational)
            by_writer = find_answers(written, model, path, relational)
            matches = sum(len(answers) for answers in by_writer)
            report["matches"][kind] = matches
            if by_store != by_writer:
                first = next(i for i, (a, b) in enumerate(zip(by_store, by_writer)) if a != b)
                problems.append(f"C-FIND {kind}: answers differ, first at query {first}: "
                                f"{by_store[first][:2]} against {by_writer[first][:2]}")
            if matches == 0:
                problems.append(f"C-FIND {kind}: no match at all")
        if strace:
            strace.send_signal(signal.SIGINT)
            strace.wait()
            storage = [line for line in open(trace_path) if written_dir + "/" in line
                       and written_dir + "/index" not in line]
            report["storage_files_opened_by_find"] = len(storage)
            if storage:
                problems.append(f"Orthanc opened {len(storage)} stored files during C-FIND, "
                                f"e.g. {storage[0].strip()}")
    finally:
        stored.stop()
        if written:
            written.stop()
    problems += orthanc_index.compare_databases(os.path.join(stored.dir, "index"),
                                                os.path.join(written_dir, "index"))
    errors = [line.strip() for line in open(written.log_path) if line.startswith("E")]
    if errors:
        problems.append(f"the written index's Orthanc logged errors: {errors[:3]}")
    report["problems"] = problems
    print(json.dumps({"check_orthanc_index": report}), flush=True)
    if problems:
        raise RuntimeError("Orthanc's written index differs from C-STORE's:\n" +
                           "\n".join(problems))
    return report


# ----- part 1: C-FIND latency -----

def find_stored(args, binaries, work_dir):
    """C-FIND latency on `--find-instances` stored into every peer by C-STORE."""
    files_dir = os.path.join(work_dir, f"find-files-{args.find_instances}")
    if not os.path.isdir(files_dir) or len(os.listdir(files_dir)) != args.find_instances:
        shutil.rmtree(files_dir, ignore_errors=True)
        subprocess.run([binaries["qr_load"], "files", files_dir, str(args.find_instances), "128"],
                       check=True, stdout=subprocess.DEVNULL)
    queries = {kind: queries_file(binaries, work_dir, args.find_instances, kind, args.queries)
               for kind, _, _ in QUERY_KINDS}
    peers = {}
    loads = {}
    results = []
    for kind in args.peers:
        peer = Peer(kind, work_dir, binaries)
        seconds = store_files(peer, files_dir)
        loads[kind] = {"instances": args.find_instances, "seconds": seconds,
                       "instances_per_s": args.find_instances / seconds}
        print(json.dumps({"load": kind, **loads[kind]}), flush=True)
        peers[kind] = peer
    try:
        for repetition in range(args.repeat):
            shift = repetition % max(len(args.peers), 1)
            order = args.peers[shift:] + args.peers[:shift]
            for query_kind, _, relational in QUERY_KINDS:
                for kind in order:
                    result = find_latency(binaries, peers[kind], queries[query_kind],
                                          args.queries, relational)
                    result.update(peer=kind, query=query_kind, instances=args.find_instances,
                                  repetition=repetition, loaded="C-STORE")
                    print(json.dumps(result), flush=True)
                    results.append(result)
    finally:
        for peer in peers.values():
            peer.stop()
    return results, loads


def find_part(args, binaries, work_dir):
    results = []
    loads = {}
    if args.find_instances:
        results, loads = find_stored(args, binaries, work_dir)
    for instances in args.index_instances:
        data_dir = os.path.join(work_dir, f"sluice-index-{instances}")
        template = os.path.join(work_dir, "template.dcm")
        subprocess.run([binaries["qr_load"], "files", os.path.join(work_dir, "template"), "1",
                        "128"], check=True, stdout=subprocess.DEVNULL)
        shutil.copy(os.path.join(work_dir, "template", "00000000.dcm"), template)
        marker = os.path.join(data_dir, "qr-loaded")
        load = None
        if not os.path.exists(marker):
            shutil.rmtree(data_dir, ignore_errors=True)
            load = run_json([binaries["qr_load"], "index", data_dir, str(instances), template],
                            timeout=24 * 3600)
            with open(marker, "w") as file:
                json.dump(load, file)
        else:
            with open(marker) as file:
                load = json.load(file)
        loads[f"sluice-index-{instances}"] = load
        # Orthanc's index written directly too (`--orthanc-index-instances`),
        # same archive (orthanc_index.py).
        orthanc_dir = None
        if instances in args.orthanc_index_instances:
            orthanc_dir = os.path.join(work_dir, f"orthanc-index-{instances}")
            loads[f"orthanc-index-{instances}"] = orthanc_written(binaries, work_dir, instances,
                                                                  orthanc_dir)
        # The same warm-up for every server: each one's index files read
        # once into the page cache before the first repetition.
        warm([os.path.join(data_dir, "index")] + ([os.path.join(orthanc_dir, "index")]
                                                  if orthanc_dir else []))
        # Exact person-name matching (the default) and case-insensitive, one
        # server each over the same index, and Orthanc over its own, in an
        # order that rotates every repetition; each server started afresh
        # every repetition. qr_load writes the files layout (objects/).
        modes = {"exact": ["--storage-layout", "files"],
                 "case-insensitive": ["--storage-layout", "files",
                                      "--query-person-name-matching", "case-insensitive"]}
        servers = list(modes) + (["orthanc"] if orthanc_dir else [])
        for repetition in range(args.repeat):
            shift = repetition % len(servers)
            for mode in servers[shift:] + servers[:shift]:
                started = time.time()
                if mode == "orthanc":
                    peer = Peer("orthanc", work_dir, binaries, data_dir=orthanc_dir, keep=True,
                                label=f"INDEX{instances}")
                    # Orthanc matches person names case-insensitively: every kind.
                    kinds = [(kind, relational, "study") for kind, _, relational in QUERY_KINDS]
                    kinds += [(kind, False, model) for kind, _, model, _ in NAME_KINDS]
                else:
                    peer = Peer("sluice", work_dir, binaries, data_dir=data_dir, keep=True,
                                extra=modes[mode])
                    kinds = [(kind, relational, "study") for kind, _, relational in QUERY_KINDS
                             if mode == "exact" or kind == "study-name"]
                    kinds += [(kind, False, model) for kind, _, model, kind_mode in NAME_KINDS
                              if mode == "exact" and kind_mode == "exact" or mode != "exact"]
                start_s = time.time() - started
                try:
                    for query_kind, relational, model in kinds:
                        path = queries_file(binaries, work_dir, instances, query_kind,
                                            args.queries)
                        result = find_latency(binaries, peer, path, args.queries, relational,
                                              model)
                        result.update(peer=peer.kind, query=query_kind, instances=instances,
                                      repetition=repetition, loaded="index written directly",
                                      start_s=start_s)
                        if mode != "orthanc":
                            result["person_name_matching"] = mode
                        print(json.dumps(result), flush=True)
                        results.append(result)
                finally:
                    peer.stop()
        if orthanc_dir:
            check_matches(results, instances)
    return results, loads


# ----- part 2: C-MOVE / C-GET throughput -----

def retrieve_part(args, binaries, work_dir):
    sets = [("ct-512k", 524_288, args.retrieve_ct), ("small-40k", 40_960, args.retrieve_small)]
    results, ceilings = [], {}
    for name, pixel_bytes, count in sets:
        files_dir = os.path.join(work_dir, f"retrieve-{name}-{count}")
        if not os.path.isdir(files_dir) or len(os.listdir(files_dir)) != count:
            shutil.rmtree(files_dir, ignore_errors=True)
            # One study of `count` instances.
            subprocess.run([binaries["qr_load"], "files", files_dir, str(count), str(pixel_bytes),
                            str(count)], check=True, stdout=subprocess.DEVNULL)
        files = sorted(os.path.join(files_dir, name) for name in os.listdir(files_dir))
        total_bytes = sum(os.path.getsize(path) for path in files)
        uid = study_uid(files_dir)
        destination = Peer("storescp", work_dir, binaries, ae="STORESCP")
        # storescp as sites run it behind a router: `--fork`, a process per
        # association, so a C-MOVE's parallel sub-operation associations
        # (Sluice: query.move_associations_max; Orthanc 1.10: one) are taken
        # at once instead of one after another.
        forking = Peer("storescp", work_dir, binaries, ae="STORESCPF", extra=["--fork"])
        second = Peer("sluice", work_dir, binaries, ae="SECOND")
        remote = {"STORESCP": destination.port, "STORESCPF": forking.port,
                  "SECOND": second.port, "QRBENCH": free_port()}
        # Sluice on `--retrieve-layout` (segments, the default, unless
        # told); `baseline` is the same with the --baseline-sluice binary.
        layout = ["--storage-layout", args.retrieve_layout]
        sources = {}
        for kind in args.retrieve_peers:
            if kind == "baseline":
                sources[kind] = Peer("sluice", work_dir, binaries, ae="BASELINE",
                                     remote_aes=remote, extra=layout,
                                     binary=args.baseline_sluice)
            else:
                sources[kind] = Peer(kind, work_dir, binaries, remote_aes=remote,
                                     extra=layout if kind == "sluice" else [])
        for source in sources.values():
            store_files(source, files_dir)
        # The sender's ceiling reads what Sluice stored, as its C-GET and
        # C-MOVE read it: the files of objects/, or the used part of each
        # segment (records in the order they were written, which is the
        # order this branch sends them in).
        stored = stored_ranges(binaries, sources["sluice"]) if "sluice" in sources else files
        list_path = os.path.join(work_dir, f"files-{name}.txt")
        with open(list_path, "w") as file:
            file.write("\n".join(stored))
        sink_port = free_port()
        sink = subprocess.Popen([binaries["qr_client"], "sink", str(sink_port)],
                                stdout=subprocess.PIPE, text=True)
        sink.stdout.readline()
        try:
            for repetition in range(args.repeat):
                order = list(sources)
                order = order[repetition % len(order):] + order[:repetition % len(order)]
                # Every way of moving the bytes (qr_client read-send --via),
                # warm (the page cache as left: the set was just stored or
                # read) and, with --ceiling-cold or --drop-caches, cold.
                caches = [False] + ([True] if args.ceiling_cold or args.drop_caches else [])
                if args.drop_caches:
                    caches = [True]
                for cold in caches:
                    for via in args.ceiling_vias:
                        if cold:
                            drop_caches()
                        else:
                            # Warm: one pass first, so the set is in the page
                            # cache whatever ran before.
                            run_json([binaries["qr_client"], "read-send", str(sink_port),
                                      list_path, "--via", "sendfile"])
                        load_before = os.getloadavg()[0]
                        speed = run_json([binaries["qr_client"], "read-send", str(sink_port),
                                          list_path, "--via", via])
                        speed.update(set=name, kind="speed-of-light", repetition=repetition,
                                     via=via, page_cache="dropped" if cold else "warm",
                                     layout=args.retrieve_layout,
                                     read_units=speed.get("files"), instances=count,
                                     instances_s=count / max(speed["seconds"], 1e-9),
                                     load_average_1m=[load_before, os.getloadavg()[0]])
                        results.append(speed)
                        print(json.dumps(speed), flush=True)
                if not args.drop_caches:
                    # The retrievals after it read a warm set.
                    run_json([binaries["qr_client"], "read-send", str(sink_port), list_path,
                              "--via", "sendfile"])
                # The destination's own receive ceiling: DCMTK storescu of
                # the same files straight into storescp (it bounds C-MOVE
                # into storescp when it is slower than the sender).
                if args.drop_caches:
                    drop_caches()
                load_before = os.getloadavg()[0]
                seconds = store_files(destination, files_dir)
                for entry in os.listdir(destination.dir):
                    os.remove(os.path.join(destination.dir, entry))
                receive = {"set": name, "kind": "storescp-receive", "repetition": repetition,
                           "seconds": seconds, "bytes": total_bytes, "instances": count,
                           "mb_s": total_bytes / seconds / 1e6, "instances_s": count / seconds,
                           "page_cache": "dropped" if args.drop_caches else "as left",
                           "load_average_1m": [load_before, os.getloadavg()[0]]}
                results.append(receive)
                print(json.dumps(receive), flush=True)
                for kind in order:
                    # C-GET one sub-operation at a time (no window proposed),
                    # then proposing --get-window: Sluice answers it, a
                    # peer that answers none (Orthanc) goes on one at a time
                    # (the row says what was answered).
                    windows = [1] + ([args.get_window] if args.get_window > 1 else [])
                    runs = [("move", "STORESCP", 1), ("move", "STORESCPF", 1),
                            ("move", "SECOND", 1)] + [("get", None, w) for w in windows]
                    for operation, target, window in runs:
                        if args.drop_caches:
                            drop_caches()
                        load_before = os.getloadavg()[0]
                        cpu_before = sum(tree_cpu_seconds(sources[kind].process.pid))
                        outcome = retrieve(binaries, sources[kind], operation, uid, target,
                                           window)
                        cpu = sum(tree_cpu_seconds(sources[kind].process.pid)) - cpu_before
                        outcome["load_average_1m"] = [load_before, os.getloadavg()[0]]
                        outcome["server_cpu_s_per_gb"] = cpu / (total_bytes / 1e9)
                        outcome["client_cpu_s_per_gb"] = outcome["client_cpu_s"] / (
                            total_bytes / 1e9)
                        outcome["machine_cpu_s_per_gb"] = outcome["machine_busy_s"] / (
                            total_bytes / 1e9)
                        if window > 1:
                            target = (f"qr_client, window {window} proposed, "
                                      f"{outcome.get('window', 1)} answered")
                        if target in ("STORESCP", "STORESCPF"):
                            # What storescp wrote, so a large set fits the
                            # disk over repetitions (the second Sluice keeps
                            # one copy: the next move's are duplicates).
                            emptied = destination if target == "STORESCP" else forking
                            for entry in os.listdir(emptied.dir):
                                os.remove(os.path.join(emptied.dir, entry))
                        seconds = max(outcome["seconds"], 1e-9)
                        outcome.update(set=name, peer=kind, operation=operation,
                                       destination=target or "qr_client", repetition=repetition,
                                       instances=count, bytes=total_bytes,
                                       mb_s=total_bytes / seconds / 1e6,
                                       instances_s=outcome.get("completed", 0) / seconds)
                        results.append(outcome)
                        print(json.dumps(outcome), flush=True)
        finally:
            sink.kill()
            sink.wait()
            for peer in [destination, forking, second, *sources.values()]:
                peer.stop()
    return results


# ----- part 3: ingest beside retrieval -----

def ingest_part(args, binaries, work_dir):
    files_dir = os.path.join(work_dir, f"retrieve-ct-512k-{args.retrieve_ct}")
    uid = study_uid(files_dir)
    results = []
    # Ingest alone, then beside a C-GET loop once per retrieval share
    # (query.retrieve_share_under_ingest; 100 is no share: the server as it
    # was before it had one), interleaved, order reversed every repetition.
    runs = [(False, None)] + [(True, share) for share in args.ingest_shares]
    for repetition in range(args.repeat):
        for beside, share in (runs if repetition % 2 == 0 else runs[::-1]):
            extra = [] if share is None else ["--query-retrieve-share-under-ingest", str(share)]
            peer = Peer("sluice", work_dir, binaries, extra=extra)
            store_files(peer, files_dir)
            stop = threading.Event()
            retrieved = {"bytes": 0, "runs": 0}

            def retrieve_loop():
                while not stop.is_set():
                    outcome = retrieve(binaries, peer, "get", uid)
                    retrieved["bytes"] += outcome.get("received_bytes", 0)
                    retrieved["runs"] += 1

            thread = threading.Thread(target=retrieve_loop)
            out_path = os.path.join(work_dir, f"ingest-{repetition}-{beside}-{share}.json")
            load_before = os.getloadavg()[0]
            started = time.time()
            if beside:
                thread.start()
            subprocess.run([binaries["loadgen"], "run", "--quiet", "--target",
                            f"127.0.0.1:{peer.port}", "--called-ae", peer.ae, "--calling-ae",
                            "INGEST", "--associations", "16", "--duration",
                            str(args.ingest_seconds), "--mix", "ct", "--out", out_path],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elapsed = time.time() - started
            stop.set()
            if beside:
                thread.join()
            peer.stop()
            with open(out_path) as file:
                data = json.load(file)
            result = {"repetition": repetition, "retrieval_beside": beside, "share": share,
                      "load_average_1m": [load_before, os.getloadavg()[0]],
                      "ingest_instances_s": data["instances_per_s"],
                      "ingest_mb_s": data["megabytes_per_s"],
                      "retrieved_mb_s": retrieved["bytes"] / elapsed / 1e6,
                      "retrieves": retrieved["runs"]}
            results.append(result)
            print(json.dumps(result), flush=True)
    return results


# ----- Markdown -----

def markdown(results):
    lines = ["<!-- qr:begin -->", "## Query/Retrieve", "",
             f"Measured by `bench/peers/qr` on {results['machine']}, "
             f"{time.strftime('%Y-%m-%d', time.gmtime(results['started_unix_s']))}; "
             f"{results['repeat']} interleaved repetition(s), medians shown. "
             "What was loaded how is in the *loaded* column: `C-STORE` is DCMTK storescu into "
             "each peer; `index written directly` is `qr_load index` (Sluice only, every entry a "
             "hard link to one file; see bench/src/bin/qr_load.rs).", ""]
    finds = results["find"]
    lines += ["### C-FIND latency (ms, one association, queries one after the other)", "",
              "| instances | loaded | query | peer | p50 | p99 | matches/query | "
              "load average (1 min) |",
              "| ---: | --- | --- | --- | ---: | ---: | ---: | --- |"]
    order = [k for k, _, _ in QUERY_KINDS] + [k for k, _, _, _ in NAME_KINDS]
    titles = {kind: title for kind, title, _ in QUERY_KINDS}
    titles.update({kind: title for kind, title, _, _ in NAME_KINDS})

    def peer_of(r):
        mode = r.get("person_name_matching")
        return r["peer"] + (", case-insensitive names" if mode == "case-insensitive" else "")

    keys = sorted({(r["instances"], r["loaded"], r["query"], peer_of(r)) for r in finds},
                  key=lambda key: (key[0], key[1], order.index(key[2]), key[3]))
    for instances, loaded, query, peer in keys:
        runs = [r for r in finds if (r["instances"], r["loaded"], r["query"], peer_of(r))
                == (instances, loaded, query, peer)]
        errors = [r for r in runs if "error" in r]
        refused = [r for r in runs if "error" not in r and r.get("failures", 0) >= r["queries"]]
        if refused:
            lines.append(f"| {instances:,} | {loaded} | {titles[query]} | {peer} | refused "
                         f"({refused[0].get('last_failure', '')}) | | | |")
            continue
        if errors:
            lines.append(f"| {instances:,} | {loaded} | {titles[query]} | {peer} | refused | "
                         f"| {errors[0]['error'][-60:].replace('|', '/')} | |")
            continue
        loads = [value for r in runs for value in r.get("load_average_1m", [])]
        load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else ""
        lines.append(f"| {instances:,} | {loaded} | {titles[query]} | {peer} | "
                     f"{median([r['p50_ms'] for r in runs]):.2f} | "
                     f"{median([r['p99_ms'] for r in runs]):.2f} | "
                     f"{median([r['matches_per_query'] for r in runs]):.1f} | {load} |")
    lines += ["", "Loading: " + "; ".join(
        f"{name}: {load.get('instances', '?'):,} instances in {load.get('seconds', 0):.0f} s"
        for name, load in results["loads"].items()), ""]
    retrieves = results["retrieve"]
    if retrieves:
        lines += ["### C-MOVE and C-GET throughput (one study, request to final response)", "",
                  "| set | source | operation | destination | MB/s | instances/s | "
                  "source CPU s/GB | requester CPU s/GB | machine CPU s/GB |",
                  "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        combos = sorted({(r["set"], r.get("peer", ""), r.get("operation", ""),
                          r.get("destination", "")) for r in retrieves if "peer" in r})
        for combo in combos:
            runs = [r for r in retrieves if "peer" in r and (r["set"], r["peer"], r["operation"],
                                                             r["destination"]) == combo]
            loads = [value for r in runs for value in r.get("load_average_1m", [])]
            load = f" (load {min(loads):.1f}-{max(loads):.1f})" if loads else ""
            def median_of(key):
                values = [r[key] for r in runs if key in r]
                return f"{median(values):.2f}" if values else ""
            lines.append(f"| {combo[0]} | {combo[1]} | C-{combo[2].upper()} | {combo[3]}{load} | "
                         f"{median([r['mb_s'] for r in runs]):.1f} | "
                         f"{median([r['instances_s'] for r in runs]):.0f} | "
                         f"{median_of('server_cpu_s_per_gb')} | "
                         f"{median_of('client_cpu_s_per_gb')} | "
                         f"{median_of('machine_cpu_s_per_gb')} |")
        for name in sorted({r["set"] for r in retrieves}):
            speed = [r for r in retrieves if r["set"] == name and r.get("kind") == "speed-of-light"]
            if speed:
                what = "segments' used bytes" if speed[0].get("layout") == "segments" \
                    else "stored files"
                for cache in sorted({r.get("page_cache", "as left") for r in speed}):
                    best = None
                    for via in VIAS:
                        runs = [r for r in speed if r.get("page_cache", "as left") == cache
                                and r.get("via", "serial") == via]
                        if not runs:
                            continue
                        loads = [value for r in runs for value in r.get("load_average_1m", [])]
                        mb_s = median([r["mb_s"] for r in runs])
                        best = max(best or 0.0, mb_s)
                        lines.append(f"| {name} | read-send {via} ({what}, page cache {cache}, "
                                     f"+ loopback socket write, no DICOM) | | (load "
                                     f"{min(loads):.1f}-{max(loads):.1f}) | {mb_s:.1f} | "
                                     f"{median([r['instances_s'] for r in runs]):.0f} |")
                    if best is not None:
                        lines.append(f"| {name} | **the sender's ceiling** (the best read-send, "
                                     f"page cache {cache}) | | | {best:.1f} | |")
            receive = [r for r in retrieves
                       if r["set"] == name and r.get("kind") == "storescp-receive"]
            if receive:
                lines.append(f"| {name} | storescu into storescp (the destination's receive "
                             f"ceiling, page cache {receive[0].get('page_cache', 'as left')}) "
                             f"| | | {median([r['mb_s'] for r in receive]):.1f} | "
                             f"{median([r['instances_s'] for r in receive]):.0f} |")
        lines.append("")
    ingest = results["ingest"]
    if ingest:
        alone_runs = [r for r in ingest if not r["retrieval_beside"]]
        alone = median([r["ingest_instances_s"] for r in alone_runs])
        loads = [value for r in alone_runs for value in r.get("load_average_1m", [])]
        lines += ["### Ingest beside retrieval", "",
                  "| retrieval share under ingest | ingest alone (instances/s) | "
                  "ingest with C-GET running (instances/s) | ratio | "
                  "retrieval meanwhile (MB/s) | load average (1 min, before/after) |",
                  "| --- | ---: | ---: | ---: | ---: | --- |",
                  f"| (ingest alone) | {alone:.0f} | | | | "
                  f"{', '.join(f'{value:.1f}' for value in loads)} |"]
        for share in sorted({r.get("share") for r in ingest if r["retrieval_beside"]},
                            key=lambda share: -(share or 0)):
            runs = [r for r in ingest if r["retrieval_beside"] and r.get("share") == share]
            beside = median([r["ingest_instances_s"] for r in runs])
            retrieved = median([r["retrieved_mb_s"] for r in runs])
            loads = [value for r in runs for value in r.get("load_average_1m", [])]
            label = "100% (none: the server before the share)" if share == 100 else f"{share}%"
            lines.append(f"| {label} | {alone:.0f} | {beside:.0f} | {beside / alone:.0%} | "
                         f"{retrieved:.1f} | {', '.join(f'{value:.1f}' for value in loads)} |")
        lines.append("")
    lines.append("<!-- qr:end -->")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--find-instances", type=int, default=100_000)
    parser.add_argument("--index-instances", default="1000000,10000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--orthanc-index-instances", default="",
                        help="of the --index-instances sizes, those Orthanc is measured at "
                             "too, its index written directly (orthanc_index.py)")
    parser.add_argument("--check-orthanc-index", type=int, default=0, metavar="INSTANCES",
                        help="first check orthanc_index.py against Orthanc itself on this many "
                             "instances (C-STORE into one Orthanc, written for another: equal "
                             "answers, statistics and index rows, or it fails)")
    parser.add_argument("--check-queries", type=int, default=20,
                        help="queries of each kind --check-orthanc-index compares")
    parser.add_argument("--peers", default="sluice,orthanc,dcmqrscp")
    parser.add_argument("--retrieve-peers", default="sluice,orthanc")
    parser.add_argument("--retrieve-ct", type=int, default=100)
    parser.add_argument("--retrieve-small", type=int, default=1000)
    parser.add_argument("--get-window", type=int, default=16,
                        help="C-GET is also run proposing an Asynchronous Operations Window "
                             "of this many sub-operations (1: only without)")
    parser.add_argument("--retrieve-layout", default="segments", choices=["segments", "files"],
                        help="the storage layout of the Sluice retrieve sources")
    parser.add_argument("--baseline-sluice", default=None,
                        help="another sluice binary, run as the retrieve peer `baseline` "
                             "(add it to --retrieve-peers) for a before/after in one run")
    parser.add_argument("--ingest-seconds", type=float, default=10.0)
    parser.add_argument("--ingest-shares", default="100,25",
                        help="query.retrieve_share_under_ingest values to run ingest beside "
                             "retrieval with (100: no share, the baseline)")
    parser.add_argument("--parts", default="find,retrieve,ingest")
    parser.add_argument("--ceiling-vias", default=",".join(VIAS),
                        help="qr_client read-send ways measured as the sender's ceiling")
    parser.add_argument("--ceiling-cold", action="store_true",
                        help="also measure the ceiling with the page cache dropped (root), "
                             "every way once per repetition")
    parser.add_argument("--drop-caches", action="store_true",
                        help="drop the page cache (root) before every retrieval and every "
                             "sender speed-of-light read, so each reads from the disk")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "target", "bench-qr"))
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--profile", default="release")
    args = parser.parse_args()
    if args.short:
        args.repeat, args.find_instances, args.index_instances = 1, 1000, ""
        args.queries, args.retrieve_ct, args.retrieve_small, args.ingest_seconds = 20, 20, 100, 2.0
        # The Orthanc index writer checked against Orthanc on every smoke run.
        args.check_orthanc_index = args.check_orthanc_index or 1000
        args.check_queries = 5
    args.peers = [peer for peer in args.peers.split(",") if peer]
    args.retrieve_peers = [peer for peer in args.retrieve_peers.split(",") if peer]
    args.ceiling_vias = [via for via in args.ceiling_vias.split(",") if via]
    if any(via not in VIAS for via in args.ceiling_vias):
        sys.exit(f"--ceiling-vias takes {','.join(VIAS)}")
    if "baseline" in args.retrieve_peers and not args.baseline_sluice:
        sys.exit("the retrieve peer `baseline` needs --baseline-sluice PATH")
    args.index_instances = [int(n) for n in str(args.index_instances).split(",") if n]
    args.orthanc_index_instances = [int(n) for n in args.orthanc_index_instances.split(",") if n]
    args.ingest_shares = [int(n) for n in str(args.ingest_shares).split(",") if n]
    parts = set(args.parts.split(","))
    out_dir = args.out_dir or (os.path.join(args.work_dir, "out") if args.short
                               else os.path.join(REPO, "docs", "benchmarks"))
    target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    bin_dir = os.path.join(target_dir, args.profile)
    binaries = {name: os.path.join(bin_dir, file) for name, file in
                [("sluice", "sluice"), ("loadgen", "sluice-loadgen"), ("qr_client", "qr_client"),
                 ("qr_load", "qr_load")]}
    for name, path in binaries.items():
        if not os.path.isfile(path):
            sys.exit(f"{name} binary missing at {path} (bench/peers/qr builds it)")
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(out_dir, exist_ok=True)
    started = time.time()
    print(f"# {machine()}; work dir {args.work_dir}", flush=True)
    check = None
    if args.check_orthanc_index:
        check = check_orthanc_index(binaries, args.work_dir, args.check_orthanc_index,
                                    args.check_queries)
    finds, loads = find_part(args, binaries, args.work_dir) if "find" in parts else ([], {})
    retrieves = retrieve_part(args, binaries, args.work_dir) if "retrieve" in parts else []
    ingest = ingest_part(args, binaries, args.work_dir) if "ingest" in parts else []
    results = {"machine": machine(), "started_unix_s": int(started),
               "elapsed_s": time.time() - started, "repeat": args.repeat, "find": finds,
               "loads": loads, "retrieve": retrieves, "ingest": ingest,
               "check_orthanc_index": check}
    with open(os.path.join(out_dir, "qr-results.json"), "w") as file:
        json.dump(results, file, indent=1)
    section = markdown(results)
    target = (os.path.join(out_dir, "benchmarks.md") if args.short or args.out_dir
              else os.path.join(REPO, "docs", "benchmarks.md"))
    text = open(target).read() if os.path.exists(target) else ""
    if "<!-- qr:begin -->" in text:
        text = text[:text.index("<!-- qr:begin -->")] + section + \
            text[text.index("<!-- qr:end -->") + len("<!-- qr:end -->\n"):]
    else:
        text = text + ("\n" if text else "") + section
    with open(target, "w") as file:
        file.write(text)
    print(section)


if __name__ == "__main__":
    main()
