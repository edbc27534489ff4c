#!/bin/bash
# Recovery cost of one open 1 GiB segment (release sluice): fill, SIGKILL,
# Run from the workspace root after `cargo build --release -p sluice-engine
# --bin sluice` and `cargo build -p sluice-loadgen`; MIX=mr=1 COUNT=7600 for
# 135 KB records. Fills one segment, SIGKILL,
# then recovery timed in the normal case (entries present) and the worst
# case (the index gone: every record re-indexed), interleaved.
set -u
B=${B:-$(pwd)/target/recovery-bench}
mkdir -p "$B"
SLUICE=${SLUICE:-$(pwd)/target/release/sluice}
LOADGEN=${LOADGEN:-$(pwd)/target/debug/sluice-loadgen}
MIX=${MIX:-ct=1}
COUNT=${COUNT:-1900}
rm -rf $B/data $B/copy
port=$((20000 + RANDOM % 20000))
$SLUICE serve --data-dir $B/data --port $port --bind 127.0.0.1 --storage-layout segments \
  --segment-size-mib 1100 --cores 1 --free-space-floor 0 > $B/fill.log 2>&1 &
pid=$!
sleep 2
$LOADGEN run --target 127.0.0.1:$port --quiet --associations 8 --mix $MIX --count $COUNT --cores 1 --seed 7 > $B/loadgen.log 2>&1
sleep 1
kill -KILL $pid; wait $pid 2>/dev/null
ls -l $B/data/segments/
$SLUICE stats --data-dir $B/data | tail -4
start_once() { # $1 data dir, $2 log
  local p=$((20000 + RANDOM % 20000))
  local t0=$(date +%s.%N)
  $SLUICE serve --data-dir $1 --port $p --bind 127.0.0.1 --storage-layout segments \
    --segment-size-mib 1100 --cores 1 --free-space-floor 0 > $2 2>&1 &
  local spid=$!
  until grep -q "recovery: " $2 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null; do sleep 0.05; done
  local t1=$(date +%s.%N)
  kill -TERM $spid; wait $spid 2>/dev/null
  echo "$(basename $2): listening after $(echo "$t1 - $t0" | bc) s; $(grep -o 'recovery: [^"]*temporary[^"]*' $2 | tail -1 | cut -c1-400)"
}
copy_store() { # cold copy (O_DIRECT) of the killed store
  rm -rf $B/copy; mkdir -p $B/copy/segments
  for f in $B/data/segments/*.seg; do dd if=$f of=$B/copy/segments/$(basename $f) bs=4M iflag=direct oflag=direct status=none; done
  for d in $B/data/*; do n=$(basename $d); [ "$n" = segments ] || cp -a $d $B/copy/; done
}
for rep in 1 2; do
  copy_store; start_once $B/copy $B/normal-$rep.log
  copy_store; rm -rf $B/copy/index; start_once $B/copy $B/worst-$rep.log
done
uptime
