#!/bin/bash
# usage: run.sh KIND(llama|before|after) ROUND ; M=/tmp/vq/bench-tiny
# "before" needs: git worktree add /tmp/wt-before 8420aa1 ; results go to /tmp/bres2
set -u
KIND=$1; R=$2; M=/tmp/vq/bench-tiny
PORT=$((18000 + RANDOM % 1000)); PY=/work/main/.venv/bin/python; O=/tmp/bres2
case $KIND in
  llama) (cd /work/peers/llama.cpp-build/bin && exec ./llama-server -m $M/model.gguf -mm $M/mmproj.gguf -t 1 -tb 1 -np 1 -c 4096 -fa off --host 127.0.0.1 --port $PORT) > $O/$KIND-$R.log 2>&1 & ;;
  before) PYTHONPATH=/tmp/wt-before/src $PY -m vlmserve.cli.main serve --model $M/model.gguf --mmproj $M/mmproj.gguf --threads 1 --parallel 1 --ctx-size 4096 --host 127.0.0.1 --port $PORT --log-level warning > $O/$KIND-$R.log 2>&1 & ;;
  after) PYTHONPATH=/work/main/src $PY -m vlmserve.cli.main serve --model $M/model.gguf --mmproj $M/mmproj.gguf --threads 1 --parallel 1 --ctx-size 4096 --host 127.0.0.1 --port $PORT --log-level warning > $O/$KIND-$R.log 2>&1 & ;;
esac
SPID=$!
for i in $(seq 1 600); do curl -sf http://127.0.0.1:$PORT/health > /dev/null && break; sleep 0.2; done
L="$(cut -d' ' -f1-3 /proc/loadavg)"
PYTHONPATH=/work/main/src $PY -m vlmserve.cli.main bench --url http://127.0.0.1:$PORT --model $M/model.gguf --mmproj $M/mmproj.gguf --image 640x480 --runs 3 --no-concurrency --no-roofline --threads 1 --no-progress --json $O/$KIND-$R.json > $O/$KIND-$R.txt 2>&1
echo "$KIND $R rc=$? load $L"
kill $SPID; wait $SPID 2>/dev/null
