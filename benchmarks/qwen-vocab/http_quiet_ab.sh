#!/bin/bash
# A/B: vlmserve serve (switch interval default vs 0.5 ms) and llama-server, tiny qwen-vocab, decode over HTTP.
M=/tmp/vq/bench-tiny
PY=/work/main/.venv/bin/python
run() { # kind round
  PORT=$((19000 + RANDOM % 500))
  case $1 in
    llama) (cd /work/peers/llama.cpp-build/bin && exec ./llama-server -m $M/model.gguf -mm $M/mmproj.gguf -t 1 -tb 1 -np 1 -c 4096 -fa off --host 127.0.0.1 --port $PORT) > /tmp/notes/$1.log 2>&1 & ;;
    default) $PY -m vlmserve.cli.main serve --model $M/model.gguf --mmproj $M/mmproj.gguf --threads 1 --parallel 1 --ctx-size 4096 --port $PORT --log-level warning > /tmp/notes/$1.log 2>&1 & ;;
    fast) $PY -c "import sys; sys.setswitchinterval(0.0005); sys.argv=['vlmserve','serve','--model','$M/model.gguf','--mmproj','$M/mmproj.gguf','--threads','1','--parallel','1','--ctx-size','4096','--port','$PORT','--log-level','warning']; from vlmserve.cli.main import main; sys.exit(main())" > /tmp/notes/$1.log 2>&1 & ;;
  esac
  SPID=$!
  for i in $(seq 1 300); do curl -sf http://127.0.0.1:$PORT/health > /dev/null && break; sleep 0.2; done
  $PY -m vlmserve.cli.main bench --url http://127.0.0.1:$PORT --model $M/model.gguf --mmproj $M/mmproj.gguf --image 640x480 --runs 3 --no-concurrency --no-roofline --threads 1 --no-progress --json /tmp/notes/$1-$2.json > /tmp/notes/$1-$2.txt 2>&1
  echo "$1 $2 load $(cut -d' ' -f1 /proc/loadavg) $(python3 -c "import json;s=json.load(open('/tmp/notes/$1-$2.json'))['results']['summary'];print('decode', s['decode_tok_s']['median'], 'cold', s['cold_ttft_ms']['median'])")"
  kill $SPID; wait $SPID 2>/dev/null
}
for r in 1 2; do for k in llama default fast; do run $k $r; done; done
