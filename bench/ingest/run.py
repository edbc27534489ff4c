#!/usr/bin/env python3
"""First ingest figures: `sluice serve` against DCMTK `storescp`, both fed by
parallel DCMTK `storescu` processes (TCP_NODELAY=1), one association each.

Usage (from the repository root):

    cargo build --release -p sluice-engine --bin sluice
    python3 bench/ingest/run.py [--instances 2000] [--associations 1,16,64]
                                [--repeat 3] [--work-dir DIR] [--json OUT]

What it does:
  1. Writes INSTANCES distinct 512 KiB CT-like Part 10 files (512 x 512 x
     16 bits, Explicit VR Little Endian, unique UIDs) with pydicom into
     WORK_DIR/files (kept between runs: written once).
  2. For each receiver and each association count: a fresh data directory
     under WORK_DIR (same disk as the files), the receiver started, one
     C-ECHO to know it is up, then ASSOCIATIONS `storescu` processes at once,
     each sending its share of the files on one association. The wall time
     runs from starting the senders to the last one exiting.
  3. Server CPU: utime + stime of the receiver (all threads) from
     /proc/<pid>/stat, before and after. For `storescp --fork` (used for more
     than one association: plain storescp serves one association at a time)
     the children's CPU is counted too: cutime + cstime of the children it
     has reaped, plus utime + stime of any child not yet reaped (a zombie
     still shows its times).
  4. Checks that every instance was stored (file count), then removes the
     data directory and syncs, so the next run does not pay this one's
     writeback.

Durability differs: Sluice answers success only after fsync of the file and
its directory and an index commit; storescp writes into the page cache and
never fsyncs. storescp runs with its defaults (it decodes and re-encodes each
data set; `+B` would write the received bytes as they are).
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
import tempfile
import time

DCMTK = os.environ.get("SLUICE_DCMTK_BIN", "/usr/bin")
AE = "SLUICE"
ROOT = "1.2.826.0.1.3680043.10.1234.81."
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tool(name):
    # Absolute paths: pynetdicom installs `storescu`/`storescp` scripts that
    # shadow DCMTK's on PATH.
    path = os.path.join(DCMTK, name)
    if not os.path.isfile(path):
        sys.exit(f"DCMTK {name} not found at {path} (apt-get install dcmtk)")
    return path


def write_files(directory, count):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    os.makedirs(directory, exist_ok=True)
    existing = sorted(name for name in os.listdir(directory) if name.endswith(".dcm"))
    if len(existing) >= count:
        return [os.path.join(directory, name) for name in existing[:count]]
    pixels = bytearray(os.urandom(512 * 512 * 2))
    study = generate_uid(prefix=ROOT)
    paths = []
    for number in range(count):
        if number % 200 == 0:
            series = generate_uid(prefix=ROOT)
        # Each file's pixels differ a little (its number in the first bytes).
        pixels[0:8] = number.to_bytes(8, "little")
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid(prefix=ROOT)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientName = "Bench^Ingest"
        ds.PatientID = "BENCH1"
        ds.Modality = "CT"
        ds.InstanceNumber = number + 1
        ds.Rows = 512
        ds.Columns = 512
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
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


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stat_fields(pid):
    """Fields of /proc/<pid>/stat after the command name (field 3 is [0])."""
    with open(f"/proc/{pid}/stat") as file:
        text = file.read()
    return text[text.rindex(")") + 2:].split()


def own_cpu_ticks(pid):
    """(user, system) clock ticks of one process, all its threads."""
    fields = stat_fields(pid)
    return int(fields[11]), int(fields[12])  # utime, stime


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


def tree_cpu_ticks(pid):
    """(user, system) ticks of the receiver and its children: reaped
    (cutime, cstime) plus not yet reaped (their own utime, stime). Re-read
    if a child was reaped meanwhile, so none is counted twice or not at all."""
    for _ in range(100):
        before = stat_fields(pid)
        user, system = 0, 0
        for child, _state in children(pid):
            try:
                child_user, child_system = own_cpu_ticks(child)
            except (FileNotFoundError, ProcessLookupError):
                continue
            user, system = user + child_user, system + child_system
        after = stat_fields(pid)
        if before[13:15] == after[13:15]:
            return (user + int(after[11]) + int(after[13]),
                    system + int(after[12]) + int(after[14]))
    raise RuntimeError("children kept being reaped while reading their CPU")


def wait_children_done(pid, timeout=30):
    """Waits until every child of `pid` has exited (zombie or reaped)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(state == "Z" for _child, state in children(pid)):
            return
        time.sleep(0.02)
    raise RuntimeError(f"children of {pid} still running after {timeout} s")


def echo(port):
    deadline = time.time() + 30
    while time.time() < deadline:
        result = subprocess.run([tool("echoscu"), "-aec", AE, "127.0.0.1", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, TCP_NODELAY="1"))
        if result.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("receiver did not answer C-ECHO within 30 s")


def count_files(directory):
    return sum(len(files) for _root, _dirs, files in os.walk(directory))


def start_receiver(receiver, sluice, data_dir, port, associations, log):
    if receiver == "sluice":
        command = [sluice, "serve", "--data-dir", data_dir, "--port", str(port),
                   "--bind", "127.0.0.1", "--ae-title", AE]
    else:
        os.makedirs(data_dir)
        command = [tool("storescp")] + (["--fork"] if associations > 1 else []) + [
            "-aet", AE, "-od", data_dir, str(port)]
    return subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, TCP_NODELAY="1"))


def one_run(receiver, sluice, files, total_bytes, associations, work_dir):
    data_dir = os.path.join(work_dir, f"data-{receiver}-{associations}")
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    log_path = os.path.join(work_dir, f"{receiver}-{associations}.log")
    with open(log_path, "w") as log:
        server = start_receiver(receiver, sluice, data_dir, port, associations, log)
    try:
        echo(port)
        if receiver == "storescp":
            wait_children_done(server.pid)
        cpu_before = tree_cpu_ticks(server.pid)
        shares = [files[index::associations] for index in range(associations)]
        senders = []
        started = time.perf_counter()
        for index, share in enumerate(shares):
            sender_log = open(os.path.join(work_dir, f"storescu-{index}.log"), "w")
            senders.append((subprocess.Popen(
                [tool("storescu"), "-aec", AE, "-aet", f"BENCH{index}", "127.0.0.1",
                 str(port)] + share,
                stdout=sender_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(os.environ, TCP_NODELAY="1")), sender_log))
        failed = 0
        for process, sender_log in senders:
            failed += process.wait() != 0
            sender_log.close()
        seconds = time.perf_counter() - started
        if receiver == "storescp":
            wait_children_done(server.pid)
        cpu_after = tree_cpu_ticks(server.pid)
        cpu_user_seconds = (cpu_after[0] - cpu_before[0]) / CLOCK_TICKS
        cpu_system_seconds = (cpu_after[1] - cpu_before[1]) / CLOCK_TICKS
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    area = os.path.join(data_dir, "objects") if receiver == "sluice" else data_dir
    stored = count_files(area)
    shutil.rmtree(data_dir, ignore_errors=True)
    os.sync()
    if failed or stored != len(files):
        raise RuntimeError(f"{receiver} x{associations}: {failed} senders failed, "
                           f"{stored} of {len(files)} stored (logs in {work_dir})")
    cpu_seconds = cpu_user_seconds + cpu_system_seconds
    return {
        "receiver": receiver,
        "associations": associations,
        "instances": len(files),
        "bytes": total_bytes,
        "seconds": seconds,
        "instances_per_s": len(files) / seconds,
        "mb_per_s": total_bytes / 1e6 / seconds,
        "cpu_seconds": cpu_seconds,
        "cpu_user_seconds": cpu_user_seconds,
        "cpu_system_seconds": cpu_system_seconds,
        "load_average_1min": os.getloadavg()[0],
        "cpu_seconds_per_gb": cpu_seconds / (total_bytes / 1e9),
    }


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as file:
        memory_kib = int(file.readline().split()[1])
    return (f"{os.cpu_count()} CPUs ({model}), {memory_kib / 2**20:.0f} GiB RAM, "
            f"Linux {platform.release()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--associations", default="1,16,64")
    parser.add_argument("--receivers", default="sluice,storescp")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work-dir")
    parser.add_argument("--sluice", default=os.path.join(REPO, "target/release/sluice"))
    parser.add_argument("--json")
    args = parser.parse_args()
    if not os.path.isfile(args.sluice):
        sys.exit(f"{args.sluice} missing: cargo build --release -p sluice-engine --bin sluice")
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="sluice-ingest-")
    os.makedirs(work_dir, exist_ok=True)
    files = write_files(os.path.join(work_dir, "files"), args.instances)
    total_bytes = sum(os.path.getsize(path) for path in files)
    os.sync()
    print(f"# {machine()}; work dir {work_dir}; {len(files)} files, {total_bytes / 1e6:.0f} MB",
          flush=True)
    results = []
    for associations in [int(text) for text in args.associations.split(",")]:
        for receiver in args.receivers.split(","):
            runs = [one_run(receiver, args.sluice, files, total_bytes, associations, work_dir)
                    for _ in range(args.repeat)]
            # The run with the median wall time stands for the set.
            runs.sort(key=lambda run: run["seconds"])
            median = dict(runs[len(runs) // 2])
            median["runs_seconds"] = [round(run["seconds"], 2) for run in runs]
            median["load_average_1min_runs"] = [round(run["load_average_1min"], 1)
                                                for run in runs]
            median["cpu_seconds_per_gb_runs"] = [round(run["cpu_seconds_per_gb"], 2)
                                                 for run in runs]
            results.append(median)
            print(json.dumps(median), flush=True)
    print()
    print("| receiver | associations | instances/s | MB/s | server CPU s/GB (user + sys) "
          "| fsync | runs (s) |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for result in results:
        gigabytes = result["bytes"] / 1e9
        print(f"| {result['receiver']} | {result['associations']} | "
              f"{result['instances_per_s']:.0f} | {result['mb_per_s']:.0f} | "
              f"{result['cpu_seconds_per_gb']:.2f} "
              f"({result['cpu_user_seconds'] / gigabytes:.2f} + "
              f"{result['cpu_system_seconds'] / gigabytes:.2f}) | "
              f"{'yes' if result['receiver'] == 'sluice' else 'no'} | "
              f"{', '.join(str(s) for s in result['runs_seconds'])} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"machine": machine(), "results": results}, file, indent=1)


if __name__ == "__main__":
    main()
