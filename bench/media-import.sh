#!/bin/bash
# `sluice media import` against DCMTK storescu into `sluice serve`, same files,
# same run (docs/benchmarks.md, "Media import").
# Usage: bench/media-import.sh WORKDIR   (WORKDIR/gen: the Part 10 files, e.g.
#   python3 tests/fixtures/sluice_peer.py write WORKDIR/gen 2000 256)
# SLUICE=path/to/release/sluice overrides the binary (default target/release/sluice).
set -e
B=$(realpath "${SLUICE:-target/release/sluice}")
W=$1
cd "$W"
rm -rf A B C D FS
PORT=$((20000 + RANDOM % 20000))
printf '[storage]\nfree_space_floor = "0"\n' > c.toml
# Seconds taken by a command (its output to $OUT).
t() { local s=$(date +%s.%N); "$@" > "$OUT" 2>&1; local e=$(date +%s.%N); echo "$e - $s" | bc; }
serve() { $B serve --config c.toml --data-dir "$1" --port $PORT --bind 127.0.0.1 > "$1.log" 2>&1 & SP=$!
  until /usr/bin/echoscu -aec SLUICE 127.0.0.1 $PORT 2>/dev/null; do sleep 0.2; done; }
stop() { kill $SP; wait $SP || true; }
echo "files $(ls gen | wc -l) bytes $(du -sb gen | cut -f1)"
serve A
OUT=storescu-plain.out; echo "storescu-plain s $(t env TCP_NODELAY=1 /usr/bin/storescu -aec SLUICE 127.0.0.1 $PORT +sd gen)"
OUT=export.out; echo "export s $(t $B media export --config c.toml --data-dir A --out FS --patient PEER1): $(tail -1 export.out)"
stop
echo "fileset bytes $(du -sb FS | cut -f1)"
serve B; stop
OUT=import-fileset.out; echo "import-fileset s $(t $B media import --config c.toml --data-dir B FS): $(tail -1 import-fileset.out)"
serve D; stop
OUT=import-plain.out; echo "import-plain s $(t $B media import --config c.toml --data-dir D gen): $(tail -1 import-plain.out)"
serve C
OUT=storescu-fileset.out; echo "storescu-fileset s $(t env TCP_NODELAY=1 /usr/bin/storescu -aec SLUICE 127.0.0.1 $PORT +sd +r FS/DICOM)"
stop
