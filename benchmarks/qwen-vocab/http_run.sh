#!/bin/bash
# usage: benchrun.sh NAME MODEL_DIR KIND(llama|before|after) ROUND
# One `vlmserve bench --url` run against a freshly started server; JSON to /tmp/bres/NAME-KIND-ROUND.json
set -u
NAME=$1; M=$2; KIND=$3; R=$4
PORT=$((18000 + RANDOM % 1000))
PY=/work/main/.venv/bin/python
mkdir -p /tmp/bres
LOG=/tmp/bres/$NAME-$KIND-$R.log
case $KIND in
  llama) (cd /work/peers/llama.cpp-build/bin && exec ./llama-server -m $M/model.gguf -mm $M/mmproj.gguf -t 1 -tb 1 -np 1 -c 4096 -fa off --host 127.0.0.1 --port $PORT) > $LOG 2>&1 &
         ;;
  before) PYTHONPATH=/work/wt-vocab-before/src $PY -m vlmserve.cli.main serve --model $M/model.gguf --mmproj $M/mmproj.gguf --threads 1 --parallel 1 --ctx-size 4096 --host 127.0.0.1 --port $PORT --log-level warning > $LOG 2>&1 &
         ;;
  after) PYTHONPATH=/work/wt-vocab/src $PY -m vlmserve.cli.main serve --model $M/model.gguf --mmproj $M/mmproj.gguf --threads 1 --parallel 1 --ctx-size 4096 --host 127.0.0.1 --port $PORT --log-level warning > $LOG 2>&1 &
         ;;
esac
SPID=$!
for i in $(seq 1 600); do curl -sf http://127.0.0.1:$PORT/health > /dev/null && break; sleep 0.2; done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)" >> /tmp/bres/loads.txt
PYTHONPATH=/work/wt-vocab/src $PY -m vlmserve.cli.main bench --url http://127.0.0.1:$PORT --model $M/model.gguf --mmproj $M/mmproj.gguf --image 640x480 --runs 3 --no-concurrency --no-roofline --threads 1 --no-progress --json /tmp/bres/$NAME-$KIND-$R.json > /tmp/bres/$NAME-$KIND-$R.txt 2>&1
echo "$NAME $KIND $R rc=$? $(grep -E 'TTFT cold|decode' /tmp/bres/$NAME-$KIND-$R.txt | tr -s ' ' | tr '\n' ' ')"
kill $SPID; wait $SPID 2>/dev/null
