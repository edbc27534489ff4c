#!/bin/bash
# bench/metrics-cost.sh: the instruction cost of [metrics] per instance.
# callgrind counts instructions, which the machine's load does not change. Runs sluice serve (release,
# portable backend) under callgrind with metrics off and on (scraped every
# second), for N1 and N2 instances of ~40 KB sent by storescu over one
# association; the per-instance cost is the difference between the two sizes.
# Needs valgrind, DCMTK storescu, pydicom and a release build
# (cargo build --release --bin sluice). Figures: docs/benchmarks.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/sluice}
WORK=${WORK:-/tmp/mcost}
N1=${N1:-100}; N2=${N2:-300}
rm -rf "$WORK"; mkdir -p "$WORK"
python3 "$ROOT/tests/fixtures/qr_corpus.py" "$WORK/corpus" --bulk $N2 --bulk-bytes 40000 --lines \
  | awk '$4=="QR-PAT-BULK"{print $7}' > "$WORK/files"
wc -l < "$WORK/files"
run() { # name metrics(0/1) count
  local name=$1 metrics=$2 count=$3
  local port; port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  local mport; mport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  local args=(serve --data-dir "$WORK/data-$name" --port "$port" --io-backend portable --free-space-floor 0 --cores 1 --index-map-size 1GiB)
  [ "$metrics" = 1 ] && args+=(--metrics-port "$mport")
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$name" "$BIN" "${args[@]}" > "$WORK/log-$name" 2>&1 &
  local pid=$!
  for i in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.5; done
  local scraper=""
  if [ "$metrics" = 1 ]; then
    ( while kill -0 $pid 2>/dev/null; do curl -s "http://127.0.0.1:$mport/metrics" > /dev/null || true; sleep 1; done ) &
    scraper=$!
  fi
  head -n "$count" "$WORK/files" | xargs /usr/bin/storescu -aec SLUICE -aet COST 127.0.0.1 "$port"
  kill -TERM $pid; wait $pid || true
  [ -n "$scraper" ] && { kill $scraper 2>/dev/null || true; }
  local ir; ir=$(grep -h "^summary:" "$WORK"/cg-$name* | awk '{s+=$2} END{print s}')
  echo "$name metrics=$metrics count=$count Ir=$ir"
}
run off1 0 $N1 | tee "$WORK/result"; run off2 0 $N2 | tee -a "$WORK/result"
run on1 1 $N1 | tee -a "$WORK/result"; run on2 1 $N2 | tee -a "$WORK/result"
# Instructions per instance: the difference between the two sizes.
awk -v n=$((N2 - N1)) '{split($4, a, "="); ir[$1] = a[2]}
  END {off = (ir["off2"] - ir["off1"]) / n; on = (ir["on2"] - ir["on1"]) / n;
       printf "per instance: off %.0f, on %.0f instructions: metrics cost %+.2f%%\n", off, on, (on - off) / off * 100}' "$WORK/result"
