#!/usr/bin/env python3
"""The throughput cost of DICOM TLS: DCMTK storescu sends the same files to
one `sluice serve` (release build) over its plain port and over its TLS
port (mutual TLS, certificates made fresh by
tests/fixtures/make_tls_certs.py), alternating, several repetitions, one
association per run. sluice-loadgen speaks no TLS, so storescu is the
sender on both sides; its own cost (OpenSSL on the TLS side) is part of
the figure, as it would be for a modality.

  bench/tls/run.py [--files 200] [--repeat 3] [--sluice target/release/sluice]

Prints one line per run and the medians; docs/benchmarks.md keeps a run.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import random
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def make_files(directory, count):
    """`count` CT images of 512x512x16 bits (512 KiB of pixels), one study."""
    study, series = generate_uid(), generate_uid()
    # Random, so nothing on the way (TLS compresses nothing anyway) gains from it.
    pixels = random.Random(7).randbytes(512 * 512 * 2)
    for index in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(directory / f"{index}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName, ds.Modality = "TLSBENCH", "Bench^TLS", "CT"
        ds.InstanceNumber = index + 1
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelRepresentation = 0
        ds.PixelData = pixels
        ds.save_as(directory / f"{index}.dcm", enforce_file_format=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sluice", default=str(ROOT / "target/release/sluice"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sluice-tls-bench-"))
    try:
        certs = work / "certs"
        subprocess.run([sys.executable, ROOT / "tests/fixtures/make_tls_certs.py", certs], check=True)
        files = work / "files"
        files.mkdir()
        make_files(files, args.files)
        total = sum(path.stat().st_size for path in files.iterdir())
        results = {"plain": [], "tls": []}
        for repetition in range(args.repeat):
            for mode in ("plain", "tls"):
                data = work / f"data-{mode}-{repetition}"
                port, tls_port = free_port(), free_port()
                server = subprocess.Popen(
                    [args.sluice, "serve", "--data-dir", data, "--port", str(port),
                     "--bind", "127.0.0.1", "--free-space-floor", "0",
                     # Files: what was stored is counted in objects/.
                     "--storage-layout", "files",
                     "--tls-port", str(tls_port),
                     "--tls-certificate", certs / "server.pem",
                     "--tls-private-key", certs / "server.key",
                     "--tls-client-ca", certs / "ca.pem"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    wait_listening(port)
                    wait_listening(tls_port)
                    tls = ["+tls", certs / "client.key", certs / "client.pem",
                           "+cf", certs / "ca.pem"] if mode == "tls" else []
                    command = ["/usr/bin/storescu", *tls, "-aec", "SLUICE", "+sd", "-nh",
                               "127.0.0.1", str(tls_port if mode == "tls" else port), files]
                    started = time.perf_counter()
                    subprocess.run(command, check=True, env={**os.environ, "TCP_NODELAY": "1"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    elapsed = time.perf_counter() - started
                finally:
                    server.terminate()
                    server.wait(timeout=30)
                stored = sum(1 for _ in (data / "objects").rglob("*") if _.is_file())
                if stored != args.files:
                    raise SystemExit(f"{mode}: {stored} of {args.files} files stored")
                rate = total / elapsed / 1e6
                results[mode].append(rate)
                print(f"{mode:5} run {repetition + 1}: {args.files} files, {total / 1e6:.0f} MB "
                      f"in {elapsed:.2f} s: {rate:.0f} MB/s, {args.files / elapsed:.0f} instances/s")
                shutil.rmtree(data)
        plain, tls = statistics.median(results["plain"]), statistics.median(results["tls"])
        print(f"median: plain {plain:.0f} MB/s, TLS {tls:.0f} MB/s "
              f"({(1 - tls / plain) * 100:.0f}% lower)")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
