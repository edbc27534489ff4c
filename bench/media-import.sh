#!/bin/bash
# Media import vs storescu into sluice serve, same files, same run.
set -e
B=/work/wt/media/target/release/sluice
W=/tmp/mbench
cd $W
rm -rf A B C D FS
PORT=$((20000 + RANDOM % 20000))
cfg() { printf '[storage]\nfree_space_floor = "0"\n' > $W/c.toml; }
cfg
t() { local s=$(date +%s.%N); "$@"; local e=$(date +%s.%N); echo "$(echo "$e - $s" | bc)"; }
mkstore() { # creates an empty store by starting and stopping a server
  $B serve --config c.toml --data-dir $1 --port $PORT --bind 127.0.0.1 > $W/$1.log 2>&1 & local pid=$!
  until /usr/bin/echoscu -aec SLUICE 127.0.0.1 $PORT 2>/dev/null; do sleep 0.2; done
  kill $pid; wait $pid || true
}
BYTES=$(du -sb gen | cut -f1)
N=$(ls gen | wc -l)
echo "files $N bytes $BYTES"
# 1. storescu of the plain files into serve A
$B serve --config c.toml --data-dir A --port $PORT --bind 127.0.0.1 > A.log 2>&1 & SP=$!
until /usr/bin/echoscu -aec SLUICE 127.0.0.1 $PORT 2>/dev/null; do sleep 0.2; done
echo "storescu-plain $(t env TCP_NODELAY=1 /usr/bin/storescu -aec SLUICE 127.0.0.1 $PORT +sd gen)"
# 2. export while serving
echo "export $(t $B media export --config c.toml --data-dir A --out FS --patient PEER1 > export.out 2>&1) $(tail -1 export.out)"
kill $SP; wait $SP || true
FSB=$(du -sb FS | cut -f1)
echo "fileset bytes $FSB"
# 3. media import of the File-set into B
mkstore B
echo "import-fileset $(t $B media import --config c.toml --data-dir B FS > importB.out 2>&1) $(tail -1 importB.out)"
# 4. media import of the plain directory into D
mkstore D
echo "import-plain $(t $B media import --config c.toml --data-dir D gen > importD.out 2>&1) $(tail -1 importD.out)"
# 5. storescu of the File-set's files into serve C
$B serve --config c.toml --data-dir C --port $PORT --bind 127.0.0.1 > C.log 2>&1 & SP=$!
until /usr/bin/echoscu -aec SLUICE 127.0.0.1 $PORT 2>/dev/null; do sleep 0.2; done

echo "storescu-fileset $(t env TCP_NODELAY=1 /usr/bin/storescu -aec SLUICE 127.0.0.1 $PORT +sd +r FS/DICOM)"
kill $SP; wait $SP || true
