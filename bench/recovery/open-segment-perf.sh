#!/bin/bash
# Where start-up recovery's time goes in the worst case (every record of
# the open segment re-indexed): run after open-segment.sh, which leaves the
# killed store in $B/data.
set -u
B=${B:-$(pwd)/target/recovery-bench}
mkdir -p "$B"
SLUICE=${SLUICE:-$(pwd)/target/release/sluice}
rm -rf $B/copy; mkdir -p $B/copy/segments
for f in $B/data/segments/*.seg; do dd if=$f of=$B/copy/segments/$(basename $f) bs=4M iflag=direct oflag=direct status=none; done
for d in $B/data/*; do n=$(basename $d); [ "$n" = segments ] || [ "$n" = index ] || cp -a $d $B/copy/; done
p=$((20000 + RANDOM % 20000))
perf record -F 499 -g -o $B/perf.data -- $SLUICE serve --data-dir $B/copy --port $p --bind 127.0.0.1 --storage-layout segments --segment-size-mib 1100 --cores 1 --free-space-floor 0 > $B/perf-serve.log 2>&1 &
perf_pid=$!
until (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null; do sleep 0.1; done
# The server is perf's child: stopped by its PID, perf then writes its data.
kill -INT $(pgrep -P $perf_pid) 2>/dev/null
sleep 3
grep -o 'recovery: [^"]*temporary[^"]*' $B/perf-serve.log | tail -1
perf report -i $B/perf.data --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -25
