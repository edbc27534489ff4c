#!/usr/bin/env python3
"""Records real DICOM traffic on loopback as raw seed material for the
fuzz corpus (see docs/design/fuzzing.md, "Seeds").

usage: record.py OUT_DIR

Writes
  OUT_DIR/streams/NN-LABEL.c2s   what the requestor sent on one association
  OUT_DIR/streams/NN-LABEL.s2c   what the acceptor answered
  OUT_DIR/datasets/NAME.TS_UID   the data set (after the file meta group) of
                                 each of pydicom's test files, with its
                                 transfer syntax as the file extension

The acceptors are DCMTK's storescp and a pynetdicom Storage Commitment SCP;
the requestors are DCMTK's echoscu/storescu and pynetdicom. A recording TCP
proxy sits between them. DCMTK is called by absolute path (pynetdicom's
console scripts shadow its names on PATH).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import pydicom
import pydicom.data
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

TEST_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Recorder:
    """A TCP proxy that writes each connection's bytes, both directions."""

    def __init__(self, upstream_port, out_dir):
        self.upstream_port = upstream_port
        self.out_dir = out_dir
        self.label = "session"
        self.count = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.done = threading.Semaphore(0)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.count += 1
            name = os.path.join(self.out_dir, f"{self.count:02d}-{self.label}")
            threads = [
                threading.Thread(target=self.pump, args=(client, upstream, name + ".c2s")),
                threading.Thread(target=self.pump, args=(upstream, client, name + ".s2c")),
            ]
            for thread in threads:
                thread.start()
            threading.Thread(target=self.finish, args=(threads,), daemon=True).start()

    @staticmethod
    def pump(source, sink, path):
        with open(path, "wb") as out:
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                out.write(data)
                try:
                    sink.sendall(data)
                except OSError:
                    break
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def finish(self, threads):
        for thread in threads:
            thread.join()
        self.done.release()

    def wait(self, label_next):
        if not self.done.acquire(timeout=30):
            sys.exit("recorder: a session did not end")
        self.label = label_next


def run(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        sys.exit(f"{command[0]} failed: {result.stderr}")


def dcmtk_sessions(streams):
    port = free_port()
    storage = tempfile.mkdtemp()
    scp = subprocess.Popen(
        ["/usr/bin/storescp", "+xa", "--ignore", "-aet", "STORESCP", "-od", storage, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        proxy = Recorder(port, streams)
        f = lambda name: os.path.join(TEST_FILES, name)
        sessions = [
            ("dcmtk-echo", ["/usr/bin/echoscu", "-aec", "STORESCP"]),
            ("dcmtk-store-ct-mr", ["/usr/bin/storescu", "-aec", "STORESCP", f("CT_small.dcm"), f("MR_small.dcm")]),
            ("dcmtk-store-rle-pdu4096", ["/usr/bin/storescu", "-aec", "STORESCP", "-pdu", "4096", "-xr", f("MR_small_RLE.dcm")]),
            ("dcmtk-store-implicit", ["/usr/bin/storescu", "-aec", "STORESCP", "-xi", f("rtplan.dcm")]),
            ("dcmtk-store-j2k", ["/usr/bin/storescu", "-aec", "STORESCP", "-xv", f("MR_small_jp2klossless.dcm")]),
            ("dcmtk-store-big", ["/usr/bin/storescu", "-aec", "STORESCP", "-xb", f("MR_small_bigendian.dcm")]),
            ("dcmtk-store-deflated", ["/usr/bin/storescu", "-aec", "STORESCP", "-xd", f("image_dfl.dcm")]),
            ("dcmtk-store-sr", ["/usr/bin/storescu", "-aec", "STORESCP", f("reportsi.dcm")]),
        ]
        proxy.label = sessions[0][0]
        for index, (_, command) in enumerate(sessions):
            run(command + ["127.0.0.1", str(proxy.port)]
                if command[0].endswith("echoscu")
                else command[:1] + ["127.0.0.1", str(proxy.port)] + command[1:])
            following = sessions[index + 1][0] if index + 1 < len(sessions) else "end"
            proxy.wait(following)
    finally:
        scp.terminate()
        scp.wait()
        shutil.rmtree(storage, ignore_errors=True)


def pynetdicom_sessions(streams):
    """Echo, abort and Storage Commitment N-ACTION against a pynetdicom SCP."""

    def on_n_action(event):
        return 0x0000, None

    scp_ae = AE(ae_title="COMMITSCP")
    scp_ae.add_supported_context(Verification)
    scp_ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    port = free_port()
    server = scp_ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_ACTION, on_n_action)]
    )
    try:
        proxy = Recorder(port, streams)
        proxy.count = 50
        proxy.label = "pynetdicom-commitment"
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", proxy.port, ae_title="COMMITSCP")
        if not assoc.is_established:
            sys.exit("pynetdicom: commitment association refused")
        request = Dataset()
        request.TransactionUID = generate_uid()
        items = []
        for index in range(3):
            item = Dataset()
            item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.1.{index}"
            items.append(item)
        request.ReferencedSOPSequence = items
        status, _ = assoc.send_n_action(
            request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
        )
        if status is None or status.Status != 0:
            sys.exit("pynetdicom: N-ACTION failed")
        assoc.send_c_echo()
        assoc.release()
        proxy.wait("pynetdicom-abort")

        assoc = ae.associate("127.0.0.1", proxy.port, ae_title="COMMITSCP")
        assoc.send_c_echo()
        assoc.abort()
        proxy.wait("end")
    finally:
        server.shutdown()


def datasets(out):
    """Each readable test file's data set as received, named by its syntax."""
    for name in sorted(os.listdir(TEST_FILES)):
        path = os.path.join(TEST_FILES, name)
        if not name.endswith(".dcm"):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=False)
        except Exception:
            continue
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        with open(path, "rb") as file:
            raw = file.read()
        if not syntax or raw[128:132] != b"DICM":
            continue
        # The meta group's length is element (0002,0000), first after DICM.
        meta_length = int.from_bytes(raw[140:144], "little")
        body = raw[144 + meta_length:]
        with open(os.path.join(out, f"{name[:-4]}.{syntax}"), "wb") as file:
            file.write(body)
        if syntax == "1.2.840.10008.1.2.1.99":
            # The inflated data set too, as Explicit VR Little Endian.
            with open(os.path.join(out, f"{name[:-4]}-inflated.1.2.840.10008.1.2.1"), "wb") as file:
                file.write(zlib.decompress(body, -15))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    streams = os.path.join(out, "streams")
    dataset_dir = os.path.join(out, "datasets")
    os.makedirs(streams, exist_ok=True)
    os.makedirs(dataset_dir, exist_ok=True)
    dcmtk_sessions(streams)
    pynetdicom_sessions(streams)
    datasets(dataset_dir)


if __name__ == "__main__":
    main()
