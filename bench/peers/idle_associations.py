"""Opens many idle DICOM associations at once (A-ASSOCIATE-RQ for
Verification on raw sockets, so one Python process holds thousands) and
keeps them open until closed: the "10,000 associations, most idle" part of
bench/peers/run."""
import resource
import socket
import struct
import time


def _item(item_type, data):
    return struct.pack(">BBH", item_type, 0, len(data)) + data


def associate_rq(called, calling):
    application = _item(0x10, b"1.2.840.10008.3.1.1.1")
    context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, b"1.2.840.10008.1.1")
                    + _item(0x40, b"1.2.840.10008.1.2"))
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.10.1234.82"))
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16)
            + b"\0" * 32 + application + context + user)
    return struct.pack(">BBI", 1, 0, len(body)) + body


def _read_pdu(sock):
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        if not chunk:
            return None, b""
        header += chunk
    length = struct.unpack(">I", header[2:6])[0]
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None, b""
        body += chunk
    return header[0], body


class IdleAssociations:
    """`count` associations to 127.0.0.1:`port`, established and idle."""

    def __init__(self, port, called, count, timeout_s=60):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = min(hard, count + 1024)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        self.sockets = []
        started = time.time()
        request = associate_rq(called, "IDLE")
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
            sock.sendall(request)
            self.sockets.append(sock)
        self.accepted = 0
        for sock in self.sockets:
            pdu_type, _body = _read_pdu(sock)
            self.accepted += pdu_type == 0x02
        self.seconds = time.time() - started

    def close(self):
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass
        self.sockets = []
