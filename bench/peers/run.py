#!/usr/bin/env python3
"""Sluice side by side with Orthanc, DCMTK storescp and dicom-rs, and against
the machine's own limits, in one run on one machine.

Usage (from the repository root; `bench/peers/run` installs what is missing
and builds first, then calls this):

    python3 bench/peers/run.py [--short] [--repeat 3] [--seconds 6]
        [--receivers sluice-uring,sluice-segments,sluice-portable,orthanc,storescp,dicom-rs]
        [--workloads ...] [--work-dir DIR] [--out-dir docs/benchmarks]

What one run is: a fresh storage directory on the work disk, the receiver
started on loopback, one C-ECHO to know it is up, the load (sluice-loadgen
for the DICOM workloads, DCMTK storescu processes for the "as shipped"
sender rows, the speed-of-light sender for the ceiling), the receiver's CPU
read from /proc before and after (its children too, for storescp --fork),
the receiver stopped by its PID, and the files it stored counted against
what the sender was told was stored. Runs are interleaved: every workload
visits every receiver once per repetition (A B C D A B C D ...), so drift on
a shared machine spreads evenly. Results: the median of the repetitions
with min and max, written as JSON (raw, every run) and Markdown with SVG
charts.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DCMTK = os.environ.get("SLUICE_DCMTK_BIN", "/usr/bin")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = "1.2.826.0.1.3680043.10.1234.82."

# What each receiver promises when it answers success.
DURABLE = {
    "sluice-uring": "yes: file and directory fsynced, index committed",
    "sluice-portable": "yes: file and directory fsynced, index committed",
    "sluice-segments": "yes: record written O_DIRECT, segment fdatasynced (one per batch), index committed",
    "orthanc": "file fsynced (SyncStorageArea), SQLite index",
    "storescp": "no fsync",
    "dicom-rs": "no fsync",
    "speed-of-light": "yes: file and directory fsynced, no index",
    "speed-of-light-segments": "yes: record written O_DIRECT, segment fdatasynced (one per batch), no index",
    "sluice-baseline": "yes: as sluice-uring (another build, for before/after runs)",
    "sluice-metrics": "yes: as sluice-uring, with [metrics] on and /metrics scraped every second",
    "sluice-audit": "yes: as sluice-uring, with [audit] writing its JSON-lines file",
}
ALL_RECEIVERS = ["sluice-uring", "sluice-segments", "sluice-portable", "orthanc", "storescp",
                 "dicom-rs"]


def tool(name):
    # Absolute paths: pynetdicom installs `storescu`/`storescp`/`echoscu`
    # scripts that shadow DCMTK's on PATH.
    path = os.path.join(DCMTK, name)
    if not os.path.isfile(path):
        sys.exit(f"DCMTK {name} not found at {path} (apt-get install dcmtk)")
    return path


# The storage layout of the sluice-baseline receiver (--baseline-layout).
baseline_layout = "files"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----- CPU accounting from /proc -----

def stat_fields(pid):
    """Fields of /proc/<pid>/stat after the command name (field 3 is [0])."""
    with open(f"/proc/{pid}/stat") as file:
        text = file.read()
    return text[text.rindex(")") + 2:].split()


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = stat_fields(int(entry))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            if int(fields[1]) == pid:
                found.append((int(entry), fields[0]))
    return found


def tree_cpu_seconds(pid):
    """(user, system) seconds of a process and its children: reaped
    (cutime, cstime) plus not yet reaped (their own utime, stime); re-read
    if a child was reaped meanwhile, so none is counted twice or not at all."""
    for _ in range(100):
        before = stat_fields(pid)
        user = system = 0
        for child, _state in children(pid):
            try:
                fields = stat_fields(child)
            except (FileNotFoundError, ProcessLookupError):
                continue
            user, system = user + int(fields[11]), system + int(fields[12])
        after = stat_fields(pid)
        if before[13:15] == after[13:15]:
            return ((user + int(after[11]) + int(after[13])) / CLOCK_TICKS,
                    (system + int(after[12]) + int(after[14])) / CLOCK_TICKS)
    raise RuntimeError("children kept being reaped while reading their CPU")


def wait_children_done(pid, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(state == "Z" for _child, state in children(pid)):
            return
        time.sleep(0.02)
    raise RuntimeError(f"children of {pid} still running after {timeout} s")


class FreshFilesystem:
    """A new journaled ext4 for one run: a sparse image in the work
    directory, attached with direct I/O (no second page cache) and mounted.

    Why: every receiver starts on the same clean file system, as an archive
    volume would be. Reusing one directory of the root file system is not
    fair: this machine's root ext4 has no journal, and on such a file system
    creating a file scans every inode deleted in the last minute
    (`recently_deleted` in ext4's inode allocator), so a run right after the
    previous run's files were deleted pays for them. Needs root."""

    def __init__(self, work_dir, size_gib):
        self.image = os.path.join(work_dir, "scratch.img")
        self.mount_point = os.path.join(work_dir, "mnt")
        os.makedirs(self.mount_point, exist_ok=True)
        with open(self.image, "wb") as file:
            file.truncate(size_gib << 30)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-N", "262144",
                        "-E", "lazy_itable_init=0,lazy_journal_init=0", self.image],
                       check=True)
        self.device = subprocess.run(
            ["losetup", "--direct-io=on", "--find", "--show", self.image],
            stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        subprocess.run(["mount", self.device, self.mount_point], check=True)

    def close(self):
        subprocess.run(["umount", self.mount_point], check=True)
        subprocess.run(["losetup", "-d", self.device], check=True)
        os.remove(self.image)


def count_files(directory, skip=()):
    return sum(1 for _root, _dirs, files in os.walk(directory)
               for name in files if name not in skip)


def segment_records(directory):
    """The records of the segment speed-of-light receiver's segments, walked
    as `segment::scan` walks them (docs/on-disk-format.md, "Segments"):
    magic, header and payload lengths, padded to 4096; the checksums are
    not checked here."""
    count = 0
    paths = [os.path.join(root, name) for root, _dirs, names in os.walk(directory)
             for name in names if name.endswith(".seg")]
    for path in paths:
        with open(path, "rb") as file:
            offset = 0
            while True:
                file.seek(offset)
                head = file.read(64)
                if len(head) < 64 or head[:8] != b"SLUICERC":
                    break
                header = int.from_bytes(head[10:12], "little")
                payload = int.from_bytes(head[24:32], "little")
                count += 1
                offset += (header + payload + 4095) // 4096 * 4096
    return count


def indexed_instances(binary, data_dir):
    """The stored instances of a Sluice data directory, from its index
    (`sluice stats`: the instances table's entries): records are not files."""
    output = subprocess.run([binary, "stats", "--data-dir", data_dir], capture_output=True,
                            text=True, check=True).stdout
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "instances":
            return int(fields[1])
    raise RuntimeError(f"no instances row in sluice stats:\n{output}")


# ----- receivers -----

class Receiver:
    """One receiver process on loopback with its own storage directory."""

    def __init__(self, name, binaries, storage_root, log_dir, extra=()):
        self.name = name
        self.port = free_port()
        self.ae = {"orthanc": "ORTHANC", "dicom-rs": "STORE-SCP"}.get(name, "SLUICE")
        self.dir = os.path.join(storage_root, f"store-{name}")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        env = dict(os.environ)
        self.forks = False
        if name.startswith("sluice-"):
            # sluice-baseline: another build of Sluice (--baseline-sluice),
            # on io_uring, interleaved with this one for before/after runs.
            # sluice-metrics: this build with the metrics endpoint on and
            # scraped every second (Prometheus scrapes every 15 s by
            # default), beside sluice-uring (off) for its cost.
            # sluice-audit: this build with the audit trail on, written to
            # a JSON-lines file beside the store, for its cost likewise.
            # sluice-segments: this build on io_uring storing records in
            # per-core segments (storage.layout = "segments").
            binary, backend = ((binaries[name], "uring") if name.startswith("sluice-baseline")
                               else (binaries["sluice"], "uring")
                               if name in ("sluice-metrics", "sluice-audit", "sluice-segments")
                               else (binaries["sluice"], name.split("-", 1)[1]))
            # Every Sluice receiver names its layout (the default is
            # segments): the others serve files, as they were measured.
            layout = ("segments" if name == "sluice-segments" else
                      baseline_layout if name.startswith("sluice-baseline") else "files")
            extra = list(extra) + ["--storage-layout", layout]
            self.binary = binary
            if name == "sluice-audit":
                extra = list(extra) + ["--audit-file", os.path.join(log_dir, "audit.jsonl")]
            self.metrics_port = free_port() if name == "sluice-metrics" else None
            if self.metrics_port:
                extra = list(extra) + ["--metrics-port", str(self.metrics_port)]
            command = [binary, "serve", "--data-dir", self.dir,
                       "--port", str(self.port), "--bind", "127.0.0.1",
                       "--io-backend", backend, "--free-space-floor", "0",
                       "--max-associations", "12000",
                       "--max-associations-per-calling-ae", "12000"] + list(extra)
            self.stored_dir, self.skip = os.path.join(self.dir, "objects"), ()
        elif name == "orthanc":
            config = os.path.join(log_dir, "orthanc.json")
            with open(config, "w") as file:
                json.dump({
                    "Name": "bench", "StorageDirectory": self.dir,
                    "IndexDirectory": self.dir, "StorageCompression": False,
                    "HttpServerEnabled": True, "HttpPort": free_port(),
                    "RemoteAccessAllowed": False, "DicomServerEnabled": True,
                    "DicomAet": self.ae, "DicomPort": self.port,
                    "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
                    # As shipped (SyncStorageArea true), threads = cores.
                    "DicomThreadsCount": os.cpu_count(), "SyncStorageArea": True,
                    "Plugins": [], "LuaScripts": [],
                }, file)
            command = ["/usr/sbin/Orthanc", config]
            # DCMTK-based: without TCP_NODELAY it stalls on Nagle.
            env["TCP_NODELAY"] = "1"
            self.stored_dir, self.skip = self.dir, ("index",)
        elif name == "storescp":
            command = [tool("storescp"), "--fork", "-aet", self.ae, "-od", self.dir,
                       str(self.port)]
            env["TCP_NODELAY"] = "1"
            self.forks = True
            self.stored_dir, self.skip = self.dir, ()
        elif name == "dicom-rs":
            command = [binaries["dicom-rs"], "-n", "-p", str(self.port), "-o", self.dir,
                       "--calling-ae-title", self.ae, "--promiscuous"]
            self.stored_dir, self.skip = self.dir, ()
        else:
            raise ValueError(name)
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env)
        self.wait_ready()
        if self.forks:
            wait_children_done(self.process.pid)
        self.cpu_before = tree_cpu_seconds(self.process.pid)

    def wait_ready(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start (log: {self.log_path})")
            result = subprocess.run(
                [tool("echoscu"), "-aec", self.ae, "127.0.0.1", str(self.port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=dict(os.environ, TCP_NODELAY="1"))
            if result.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer C-ECHO within 60 s")

    def cpu_seconds(self):
        if self.forks:
            wait_children_done(self.process.pid)
        after = tree_cpu_seconds(self.process.pid)
        return after[0] - self.cpu_before[0], after[1] - self.cpu_before[1]

    def rss_kib(self):
        with open(f"/proc/{self.process.pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def peak_rss_kib(self):
        with open(f"/proc/{self.process.pid}/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def start_scraping(self):
        """Sluice with [metrics]: GETs /metrics every second until stopped."""
        self.scrapes = 0
        if not getattr(self, "metrics_port", None):
            return
        import threading
        import urllib.request
        self.scraping = threading.Event()

        def scrape():
            while not self.scraping.wait(1.0):
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
                        answer.read()
                    self.scrapes += 1
                except OSError:
                    pass
        self.scraper = threading.Thread(target=scrape, daemon=True)
        self.scraper.start()

    def stop(self):
        """Stops the receiver by its PID; returns how many files it stored."""
        if getattr(self, "scraper", None):
            self.scraping.set()
            self.scraper.join()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        if self.name == "sluice-segments" or (self.name.startswith("sluice-baseline")
                                              and baseline_layout == "segments"):
            stored = indexed_instances(self.binary, self.dir)
        elif self.name == "speed-of-light-segments":
            stored = segment_records(self.dir)
        else:
            stored = count_files(self.stored_dir, self.skip)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.sync()
        return stored


# The segment speed of light prepares its segments as `sluice serve` does
# (`storage.segment_zero_fill`): "auto" (zeros paced, none for large
# rounds) and "off" (allocated only). Each of its runs tries both, one
# after the other, and reports the faster as the ceiling (its
# "preparation"; the other's figures in "preparations").
SOL_PREPARATIONS = ("auto", "off")


class SpeedOfLight(Receiver):
    """The speed-of-light receivers: raw frames into files (`serve`), or as
    records into a segment (`serve-segments`, 1 GiB, its segments prepared
    as `preparation` says), same durability."""

    def __init__(self, binaries, storage_root, log_dir, segments=False, preparation="auto"):
        self.name = "speed-of-light-segments" if segments else "speed-of-light"
        self.port = free_port()
        self.dir = os.path.join(storage_root, f"store-{self.name}")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.forks = False
        self.stored_dir, self.skip = self.dir, ()
        self.log_path = os.path.join(log_dir, f"{self.name}.log")
        self.log = open(self.log_path, "a")
        os.makedirs(self.dir, exist_ok=True)
        command = ([binaries["speed_of_light"], "serve-segments", self.dir, str(self.port), "1024",
                    preparation]
                   if segments else [binaries["speed_of_light"], "serve", self.dir, str(self.port)])
        self.process = subprocess.Popen(
            command,
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("speed-of-light receiver did not listen")
                time.sleep(0.05)
        self.cpu_before = tree_cpu_seconds(self.process.pid)


# ----- senders -----

def loadgen(binaries, receiver, workload, seconds, out_path):
    command = [binaries["loadgen"], "run", "--quiet",
               "--target", f"127.0.0.1:{receiver.port}", "--called-ae", receiver.ae,
               "--calling-ae", "BENCH", "--label", receiver.name,
               "--associations", str(workload["associations"]),
               "--duration", str(workload.get("seconds", seconds)),
               "--out", out_path]
    if "rate" in workload:
        command += ["--rate", str(workload["rate"])]
    if "dir" in workload:
        command += ["--dir", workload["dir"], "--new-uids"]
    else:
        command += ["--mix", workload["mix"]]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=600)
    if result.returncode != 0 or not os.path.exists(out_path):
        raise RuntimeError(f"sluice-loadgen failed against {receiver.name}: "
                           f"{result.stderr[-2000:]}")
    with open(out_path) as file:
        data = json.load(file)
    latency = data["latency_ms"]["store"]
    bad = {code: count for code, count in data["statuses"].items() if code != "0000"}
    return {
        "instances": data["totals"]["instances_ok"],
        "bytes": data["totals"]["bytes_ok"],
        "seconds": data["elapsed_s"],
        "instances_per_s": data["instances_per_s"],
        "mb_per_s": data["megabytes_per_s"],
        "latency_ms": {key: latency.get(key) for key in ("p50", "p99", "p999")},
        "failures": sum(bad.values()) + sum(data["rejections"].values())
        + sum(data["aborts"].values()),
        "loadgen_cpu_s_per_gb": data["loadgen"].get("cpu_s_per_gb"),
    }


def storescu_processes(receiver, files, associations, nagle_on, log_dir):
    """DCMTK storescu, one process per association, each sending its share;
    `nagle_on` runs it as shipped (no TCP_NODELAY in its environment)."""
    env = dict(os.environ)
    if nagle_on:
        env.pop("TCP_NODELAY", None)
    else:
        env["TCP_NODELAY"] = "1"
    shares = [files[index::associations] for index in range(associations)]
    started = time.perf_counter()
    senders = []
    for index, share in enumerate(shares):
        log = open(os.path.join(log_dir, f"storescu-{index}.log"), "w")
        senders.append((subprocess.Popen(
            [tool("storescu"), "-aec", receiver.ae, "-aet", f"BENCH{index}",
             "127.0.0.1", str(receiver.port)] + share,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env), log))
    failed = 0
    for process, log in senders:
        failed += process.wait() != 0
        log.close()
    seconds = time.perf_counter() - started
    total_bytes = sum(os.path.getsize(path) for path in files)
    return {
        "instances": len(files) if not failed else 0,
        "bytes": total_bytes,
        "seconds": seconds,
        "instances_per_s": len(files) / seconds,
        "mb_per_s": total_bytes / 1e6 / seconds,
        "latency_ms": {},
        "failures": failed,
    }


def speed_of_light_sender(binaries, receiver, connections, size, count):
    result = subprocess.run(
        [binaries["speed_of_light"], "send", str(receiver.port), str(connections),
         str(size), str(count)], stdout=subprocess.PIPE, text=True, check=True, timeout=600)
    data = json.loads(result.stdout)
    return {
        "instances": data["instances"],
        "bytes": data["instances"] * size,
        "seconds": data["seconds"],
        "instances_per_s": data["instances_per_s"],
        "mb_per_s": data["mb_per_s"],
        "latency_ms": {"p50": data["latency_ms_p50"], "p99": data["latency_ms_p99"],
                       "p999": data["latency_ms_p999"]},
        "failures": 0,
    }


# ----- data -----

def write_files(directory, count, rows, columns, study_size=50):
    """Part 10 CT-like files (Explicit VR LE, 16-bit pixels) with pydicom,
    written once and kept in the work directory."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    os.makedirs(directory, exist_ok=True)
    existing = sorted(name for name in os.listdir(directory) if name.endswith(".dcm"))
    if len(existing) >= count:
        return [os.path.join(directory, name) for name in existing[:count]]
    pixels = bytearray(os.urandom(rows * columns * 2))
    paths = []
    for number in range(count):
        if number % study_size == 0:
            study, series = generate_uid(prefix=ROOT), generate_uid(prefix=ROOT)
        pixels[0:8] = number.to_bytes(8, "little")
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid(prefix=ROOT)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.Modality = "Bench^Peers", "BENCH1", "CT"
        ds.InstanceNumber = number + 1
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = bytes(pixels)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = os.path.join(directory, f"{number:06d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# ----- the machine's ceilings -----

def iperf3_loopback(seconds):
    if not shutil.which("iperf3"):
        raise RuntimeError("iperf3 missing (apt-get install iperf3)")
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        figures = {}
        for streams in (1, 16):
            out = subprocess.run(
                ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds),
                 "-P", str(streams), "-J"], stdout=subprocess.PIPE, text=True, check=True)
            data = json.loads(out.stdout)
            figures[f"{streams}_streams_gbit_s"] = \
                data["end"]["sum_received"]["bits_per_second"] / 1e9
        return figures
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def durable_write_mb_s(directory, megabytes):
    """Sequential write of one file then fdatasync: the disk's durable
    bandwidth as dd sees it."""
    path = os.path.join(directory, "dd-probe")
    result = subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={megabytes}",
         "conv=fdatasync"], stderr=subprocess.PIPE, text=True, check=True)
    os.remove(path)
    # dd's last line: "... bytes (...) copied, 1.23 s, 456 MB/s"
    last = result.stderr.strip().splitlines()[-1]
    seconds = float(last.split(" copied, ")[1].split(" s,")[0])
    return megabytes * 1048576 / 1e6 / seconds


# ----- the plan -----

def workloads(short, data_dir):
    ct16 = {"name": "ct-512k-16", "title": "512 KB CT, 16 associations",
            "mix": "ct", "associations": 16, "sol": (16, 524_288)}
    if short:
        return [ct16, {"name": "storescu-nagle-1", "title": "DCMTK storescu as shipped (Nagle on), 1 association",
                       "storescu": (1, True), "files": "ct"}]
    return [
        {"name": "ct-512k-1", "title": "512 KB CT, 1 association", "mix": "ct",
         "associations": 1, "sol": (1, 524_288)},
        ct16,
        {"name": "ct-512k-64", "title": "512 KB CT, 64 associations", "mix": "ct",
         "associations": 64, "sol": (64, 524_288)},
        {"name": "ct-512k-256", "title": "512 KB CT, 256 associations", "mix": "ct",
         "associations": 256},
        {"name": "small-40k-16", "title": "40 KB instances, 16 associations",
         "dir": os.path.join(data_dir, "small-40k"), "associations": 16, "sol": (16, 40_960)},
        {"name": "cr-10m-4", "title": "10 MB CR, 4 associations", "mix": "cr",
         "associations": 4, "sol": (4, 10_000_000)},
        {"name": "ct-open-100", "title": "512 KB CT, open loop at 100 instances/s",
         "mix": "ct", "associations": 32, "rate": 100},
        {"name": "storescu-nagle-1", "title": "DCMTK storescu as shipped (Nagle on), 1 association",
         "storescu": (1, True), "files": "ct"},
        {"name": "storescu-tuned-1", "title": "DCMTK storescu with TCP_NODELAY=1, 1 association",
         "storescu": (1, False), "files": "ct"},
        {"name": "storescu-nagle-16", "title": "DCMTK storescu as shipped (Nagle on), 16 associations",
         "storescu": (16, True), "files": "ct"},
        {"name": "storescu-tuned-16", "title": "DCMTK storescu with TCP_NODELAY=1, 16 associations",
         "storescu": (16, False), "files": "ct"},
    ]


def one_run(workload, receiver_name, binaries, args, files, log_dir):
    filesystem = None if args.no_fresh_fs else FreshFilesystem(args.work_dir, args.fs_gib)
    storage_root = args.work_dir if filesystem is None else filesystem.mount_point
    try:
        return measured_run(workload, receiver_name, binaries, args, files, log_dir,
                            storage_root)
    finally:
        if filesystem is not None:
            filesystem.close()


def measured_run(workload, receiver_name, binaries, args, files, log_dir, storage_root):
    if receiver_name != "speed-of-light-segments":
        return measured_once(workload, receiver_name, binaries, args, files, log_dir,
                             storage_root)
    tried = {preparation: measured_once(workload, receiver_name, binaries, args, files,
                                        log_dir, storage_root, preparation)
             for preparation in SOL_PREPARATIONS}
    preparation, best = max(tried.items(), key=lambda item: item[1]["instances_per_s"])
    best["preparation"] = preparation
    best["preparations"] = {
        name: {"instances_per_s": run["instances_per_s"], "latency_ms": run["latency_ms"],
               "cpu_s_per_gb": run["cpu_s_per_gb"], "all_landed": run["all_landed"]}
        for name, run in tried.items()}
    best["all_landed"] = all(run["all_landed"] for run in tried.values())
    return best


def measured_once(workload, receiver_name, binaries, args, files, log_dir, storage_root,
                  preparation="auto"):
    if receiver_name.startswith("speed-of-light"):
        receiver = SpeedOfLight(binaries, storage_root, log_dir,
                                segments=receiver_name == "speed-of-light-segments",
                                preparation=preparation)
    else:
        # --sluice-serve-arg: this build's Sluice receivers only (the
        # baseline is another build, which may not know the flag; wrap it).
        extra = (args.sluice_serve_arg if receiver_name.startswith("sluice-")
                 and receiver_name != "sluice-baseline" else [])
        receiver = Receiver(receiver_name, binaries, storage_root, log_dir, extra=extra)
    receiver.start_scraping()
    try:
        if receiver_name.startswith("speed-of-light"):
            connections, size = workload["sol"]
            rate_guess = {40_960: 400, 524_288: 150, 10_000_000: 8}[size]
            count = max(connections * 4, int(rate_guess * args.seconds))
            sent = speed_of_light_sender(binaries, receiver, connections, size, count)
        elif "storescu" in workload:
            associations, nagle_on = workload["storescu"]
            sent = storescu_processes(receiver, files["ct"][:args.storescu_files],
                                      associations, nagle_on, log_dir)
        else:
            out_path = os.path.join(log_dir, f"loadgen-{workload['name']}-{receiver_name}.json")
            sent = loadgen(binaries, receiver, workload, args.seconds, out_path)
        user, system = receiver.cpu_seconds()
        peak_rss_kib = receiver.peak_rss_kib()
    finally:
        stored = receiver.stop()
    gigabytes = max(sent["bytes"], 1) / 1e9
    return dict(sent, **{
        "receiver": receiver_name, "workload": workload["name"],
        "stored_files": stored,
        "all_landed": stored >= sent["instances"] and sent["failures"] == 0,
        "cpu_user_s": user, "cpu_system_s": system,
        "cpu_s_per_gb": (user + system) / gigabytes,
        "peak_rss_mib": peak_rss_kib / 1024,
        "load_average_1min": os.getloadavg()[0],
        "metrics_scrapes": getattr(receiver, "scrapes", 0),
    })


def scale_run(binaries, args, log_dir, idle_count):
    """Sluice with `idle_count` idle associations open at once while 16
    more store: all accepted, all still served (each answers A-RELEASE at
    the end), and the server's memory per idle association."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from idle_associations import IdleAssociations, _read_pdu

    filesystem = None if args.no_fresh_fs else FreshFilesystem(args.work_dir, args.fs_gib)
    root = args.work_dir if filesystem is None else filesystem.mount_point
    try:
        receiver = Receiver("sluice-uring", binaries, root, log_dir,
                            extra=["--idle-timeout-ms", "600000"])
        try:
            rss_before = receiver.rss_kib()
            idle = IdleAssociations(receiver.port, receiver.ae, idle_count)
            time.sleep(1)
            rss_idle = receiver.rss_kib()
            out_path = os.path.join(log_dir, "loadgen-scale.json")
            sent = loadgen(binaries, receiver, {"associations": 16, "mix": "ct"},
                           args.seconds, out_path)
            released = 0
            for sock in idle.sockets:
                sock.sendall(bytes([5, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
            for sock in idle.sockets:
                pdu_type, _body = _read_pdu(sock)
                released += pdu_type == 0x06
            idle.close()
            user, system = receiver.cpu_seconds()
        finally:
            stored = receiver.stop()
    finally:
        if filesystem is not None:
            filesystem.close()
    return dict(sent, **{
        "receiver": "sluice-uring", "workload": "idle-associations",
        "idle_associations": idle_count, "idle_accepted": idle.accepted,
        "idle_released": released, "idle_connect_s": idle.seconds,
        "rss_before_mib": rss_before / 1024, "rss_with_idle_mib": rss_idle / 1024,
        "kib_per_idle_association": (rss_idle - rss_before) / idle_count,
        "stored_files": stored,
        "all_landed": stored >= sent["instances"] and sent["failures"] == 0
        and idle.accepted == idle_count and released == idle_count,
        "cpu_user_s": user, "cpu_system_s": system,
        "cpu_s_per_gb": (user + system) / max(sent["bytes"], 1) * 1e9,
    })


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as file:
        memory_kib = int(file.readline().split()[1])
    return (f"{os.cpu_count()} vCPUs ({model}), {memory_kib / 2**20:.0f} GiB RAM, "
            f"Linux {platform.release()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true",
                        help="one repetition, two workloads, short runs (the test suite's smoke run)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each loadgen run")
    parser.add_argument("--receivers", default=",".join(ALL_RECEIVERS))
    parser.add_argument("--workloads", default="", help="comma-separated names (default: all)")
    parser.add_argument("--storescu-files", type=int, default=200)
    parser.add_argument("--no-fresh-fs", action="store_true",
                        help="store in the work directory instead of a new loop-mounted ext4 "
                             "per run (which needs root; see FreshFilesystem)")
    parser.add_argument("--fs-gib", type=int, default=16,
                        help="size of each run's sparse file system image")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "target", "bench-peers"))
    parser.add_argument("--out-dir", default=None,
                        help="where results.json and the charts go (default: "
                             "docs/benchmarks, or <work dir>/out with --short)")
    parser.add_argument("--markdown", default=None,
                        help="the Markdown file to (re)generate (default: docs/benchmarks.md, "
                             "or <out dir>/benchmarks.md with --short)")
    parser.add_argument("--profile", default="release", help="cargo profile of the binaries")
    parser.add_argument("--baseline-sluice", action="append", default=[], metavar="BIN",
                        help="another `sluice` binary (say, a build of the previous commit) run "
                             "as receiver sluice-baseline beside this build, interleaved, for "
                             "before/after figures from one run; given again, the next ones run "
                             "as sluice-baseline-2, -3, ...")
    parser.add_argument("--baseline-layout", default="files", choices=["files", "segments"],
                        help="the storage layout sluice-baseline serves")
    parser.add_argument("--sluice-serve-arg", action="append", default=[], metavar="ARG",
                        help="one more `sluice serve` argument for this build's Sluice "
                             "receivers, not sluice-baseline (repeat it: "
                             "--sluice-serve-arg=--segment-zero-fill --sluice-serve-arg=off)")
    parser.add_argument("--dicom-rs", default=os.path.join(
        REPO, "target", "bench-tools", "bin", "dicom-storescp"))
    args = parser.parse_args()
    global baseline_layout
    baseline_layout = args.baseline_layout
    if args.short:
        args.repeat, args.seconds, args.storescu_files = 1, min(args.seconds, 2.0), 60
    out_dir = args.out_dir or (os.path.join(args.work_dir, "out") if args.short
                               else os.path.join(REPO, "docs", "benchmarks"))
    markdown = args.markdown or (os.path.join(out_dir, "benchmarks.md") if args.short
                                 else os.path.join(REPO, "docs", "benchmarks.md"))
    target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    bin_dir = os.path.join(target_dir, args.profile)
    binaries = {"sluice": os.path.join(bin_dir, "sluice"),
                "loadgen": os.path.join(bin_dir, "sluice-loadgen"),
                "speed_of_light": os.path.join(bin_dir, "speed_of_light"),
                "dicom-rs": args.dicom_rs}
    receivers = [name for name in args.receivers.split(",") if name]
    for number, baseline in enumerate(args.baseline_sluice, start=1):
        name = "sluice-baseline" if number == 1 else f"sluice-baseline-{number}"
        binaries[name] = os.path.abspath(baseline)
        receivers.append(name)
    for name, path in binaries.items():
        if (name != "dicom-rs" or "dicom-rs" in receivers) and not os.path.isfile(path):
            sys.exit(f"{name} binary missing at {path} (bench/peers/run builds it)")
    os.makedirs(args.work_dir, exist_ok=True)
    log_dir = os.path.join(args.work_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    data_dir = os.path.join(args.work_dir, "data")
    files = {"ct": write_files(os.path.join(data_dir, "ct-512k"), args.storescu_files, 512, 512)}
    plan = workloads(args.short, data_dir)
    if args.workloads:
        wanted = set(args.workloads.split(","))
        plan = [workload for workload in plan if workload["name"] in wanted]
    for workload in plan:
        if "dir" in workload:
            write_files(workload["dir"], 200, 128, 160)

    started = time.time()
    print(f"# {machine()}; work dir {args.work_dir}", flush=True)
    filesystem = None if args.no_fresh_fs else FreshFilesystem(args.work_dir, args.fs_gib)
    try:
        ceilings = {
            "iperf3_loopback": iperf3_loopback(2 if args.short else 5),
            "durable_write_mb_s": durable_write_mb_s(
                args.work_dir if filesystem is None else filesystem.mount_point,
                256 if args.short else 1024),
            "fresh_filesystem_per_run": filesystem is not None,
        }
    finally:
        if filesystem is not None:
            filesystem.close()
    print(f"# ceilings: {json.dumps(ceilings)}", flush=True)
    runs = []
    for repetition in range(args.repeat):
        for workload in plan:
            names = list(receivers)
            if "sol" in workload:
                names += ["speed-of-light", "speed-of-light-segments"]
            # Rotate the order each repetition: the first run after a
            # workload switch follows the previous workload's large deletes
            # (this VM's disk then flushes slowly for seconds: an open-loop
            # p99 of 200 ms instead of 20 ms for whichever receiver comes
            # first), so no receiver may always be first.
            shift = repetition % len(names)
            names = names[shift:] + names[:shift]
            for name in names:
                run = one_run(workload, name, binaries, args, files, log_dir)
                run["repetition"] = repetition
                runs.append(run)
                print(json.dumps(run), flush=True)
    scale = None
    if "sluice-uring" in receivers and not args.workloads:
        scale = scale_run(binaries, args, log_dir, 1000 if args.short else 10000)
        print(json.dumps(scale), flush=True)
        runs.append(scale)
    results = {"machine": machine(), "started_unix_s": int(started),
               "elapsed_s": time.time() - started, "repeat": args.repeat,
               "seconds_per_run": args.seconds, "ceilings": ceilings,
               "durability": DURABLE,
               "workloads": [{key: workload[key] for key in ("name", "title")} for workload in plan],
               "runs": runs}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as file:
        json.dump(results, file, indent=1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import render
    render.render(results, markdown, out_dir)
    failures = [run for run in runs if not run["all_landed"]]
    for run in failures:
        print(f"NOT ALL LANDED: {run['receiver']} {run['workload']}: "
              f"{run['stored_files']} files for {run['instances']} acknowledged, "
              f"{run['failures']} failures (logs in {log_dir})", file=sys.stderr)
    print(f"# results in {out_dir}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
