#!/usr/bin/env bash
# The machine's loopback TCP ceiling, to compare with the io_recv bench.
# Needs iperf3 (Debian: apt-get install -y iperf3). Starts one server on
# 127.0.0.1, runs 1 and 16 parallel streams for 5 s each, stops the server
# by its PID.
set -euo pipefail
port="${IPERF3_PORT:-5299}"
command -v iperf3 >/dev/null || { echo "iperf3 missing: apt-get install -y iperf3" >&2; exit 1; }
iperf3 -s -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT
sleep 0.5
for streams in 1 16; do
    echo "== $streams stream(s) =="
    iperf3 -c 127.0.0.1 -p "$port" -t 5 -P "$streams" -f g | grep -E "receiver" | tail -1
done
