#!/usr/bin/env bash
# Ingest with online compaction on and off, interleaved (issue 17,
# docs/design/segments.md "Compaction"): two data directories on the
# segments layout with `duplicate_policy = "replace"`, 64 MiB segments and
# any segment a quarter dead a candidate; one served with
# `storage.compaction_rate_mib_s = $RATE`, the other with 0. Each round
# serves one, then the other, with the same load: two sluice-loadgen runs
# at once, one sending a directory of 1,500 files of 128 KiB (the same
# UIDs every round: each replaces the previous round's records, which
# become dead) and one synthetic with a new seed (new instances, fewer associations, so segments end up mostly
# dead, part live, and the
# compactor has live records to copy). Prints one line per round and side:
# instances/s of both loads, and for the compacting side what its metrics
# counted during the round (bytes copied, segments deleted, MiB/s copied).
#
#   cargo build --release -p sluice-engine --bin sluice -p sluice-loadgen
#   bench/compaction-online.sh [ROUNDS] [SECONDS] [RATE]
set -euo pipefail
ROUNDS=${1:-3}
SECONDS_PER=${2:-20}
RATE=${3:-16}
BIN=${BIN:-target/release}
SAME=${SAME:-3}  # associations of the replacing load
NEW=${NEW:-1}    # associations of the new-instances load
MIX=${MIX:-mr}  # 128 KiB instances
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

metric() { # PORT NAME
    curl -s "http://127.0.0.1:$1/metrics" | awk -v name="$2" '$1 == name { print $2 }'
}

ips() { # loadgen JSON: instances per second of its run
    python3 -c 'import json,sys
def find(v):
    if isinstance(v, dict):
        if "instances_per_s" in v: return v["instances_per_s"]
        for x in v.values():
            r = find(x)
            if r is not None: return r
    if isinstance(v, list):
        for x in v:
            r = find(x)
            if r is not None: return r
print("%.1f" % find(json.load(open(sys.argv[1]))))' "$1"
}

# round SIDE RATE N: serve data dir SIDE with RATE, load it, stop it.
round() {
    local side=$1 rate=$2 n=$3
    local port metrics
    port=$(free_port)
    metrics=$(free_port)
    "$BIN/sluice" serve --data-dir "$work/$side" --port "$port" --metrics-port "$metrics" \
        --storage-layout segments --segment-size-mib 64 --duplicate-policy replace \
        --compaction-dead-percent 25 --compaction-dead-min 0 --compaction-rate-mib-s "$rate" \
        >"$work/$side-$n.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null && break
        sleep 0.1
    done
    local copied0 deleted0
    copied0=$(metric "$metrics" sluice_compaction_copied_bytes_total)
    deleted0=$(metric "$metrics" sluice_compaction_deleted_segments_total)
    local load1 load2
    "$BIN/sluice-loadgen" run --target "127.0.0.1:$port" --quiet --dir "$work/files" \
        --associations "$SAME" --duration "$SECONDS_PER" \
        --out "$work/$side-$n-same.json" >/dev/null 2>&1 &
    load1=$!
    "$BIN/sluice-loadgen" run --target "127.0.0.1:$port" --quiet --mix "$MIX" --study-size 10 \
        --associations "$NEW" --duration "$SECONDS_PER" --seed "$((1000 + n))" \
        --out "$work/$side-$n-new.json" >/dev/null 2>&1 &
    load2=$!
    wait "$load1" || echo "$side round $n: the replacing load failed" >&2
    wait "$load2" || echo "$side round $n: the new load failed" >&2
    local copied deleted
    copied=$(metric "$metrics" sluice_compaction_copied_bytes_total)
    deleted=$(metric "$metrics" sluice_compaction_deleted_segments_total)
    kill -TERM "$pid"
    wait "$pid" || true
    printf '%s round %s: replacing load %s inst/s, new load %s inst/s; compaction during it: %s MiB copied (%.1f MiB/s), %s segments deleted; load %s\n' \
        "$side" "$n" "$(ips "$work/$side-$n-same.json")" "$(ips "$work/$side-$n-new.json")" \
        "$(( (${copied%.*} - ${copied0%.*}) >> 20 ))" \
        "$(echo "(${copied%.*} - ${copied0%.*}) / 1048576 / $SECONDS_PER" | bc -l)" \
        "$(( ${deleted%.*} - ${deleted0%.*} ))" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# The replacing load's instances: the same files (same UIDs) every round.
mkdir "$work/files"
python3 tests/fixtures/sluice_peer.py write "$work/files" "${FILES:-1500}" 256 >/dev/null

# Round 0 fills both (not a figure); then on and off alternate, the side
# that goes first alternating too.
round on "$RATE" 0 >/dev/null
round off 0 0 >/dev/null
for n in $(seq 1 "$ROUNDS"); do
    if (( n % 2 )); then
        round on "$RATE" "$n"
        round off 0 "$n"
    else
        round off 0 "$n"
        round on "$RATE" "$n"
    fi
done
du -sh "$work/on" "$work/off" | sed 's/^/size /'
