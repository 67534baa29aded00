#!/usr/bin/env bash
# Every row of BENCHMARKS.md's gateway tables in one run: bge-large fp32 and int8 at 64 and 256 tokens
# (concurrency 8), fp32 mixed 8..512 tokens (concurrency 32), bge-small 16 tokens (concurrency 32), then
# the peer tables: the project beside infinity on the same workloads (single-client batches included),
# with p50/p99 and the served RSS/PSS of each. Each bge-bench call of the first part measures its own
# in-process PyTorch baseline and prints the ratio. fp32 runs on both CPU engines: onnxruntime (the
# default) and OpenVINO (--cpu-engine openvino).
#
#   deploy/bench/run_figures.sh [SHARED_MODELS_DIR] [WORK_DIR]
#
# A subset: BENCH_VARIANTS="fp32 fp32-openvino" BENCH_MIXED=0 BENCH_SMALL=0 BENCH_PEERS=0 deploy/bench/run_figures.sh
# Only the peer tables: BENCH_VARIANTS="" BENCH_SMALL=0 deploy/bench/run_figures.sh
# Only the int8 peer rows: BENCH_VARIANTS="" BENCH_SMALL=0 BENCH_PEERS=0 deploy/bench/run_figures.sh
#
# The peer is infinity_emb in a venv of its own (a benchmark peer, never a test dependency):
#   python -m venv /opt/infinity && /opt/infinity/bin/pip install "torch==2.13.0" "infinity_emb[server,torch]==0.0.78"
#   INFINITY_BIN=/opt/infinity/bin/infinity_emb deploy/bench/run_figures.sh
# Without INFINITY_BIN (or infinity_emb on PATH) the peer tables are skipped, saying so.
#
# SHARED_MODELS_DIR holds the real configs/tokenizers (default ../shared/models); random weights of
# exactly that shape are built once into WORK_DIR (default /tmp/bench). About 26 minutes on 2 cores,
# plus ~30 for the peers (BENCH_ROUNDS=5 rounds of each workload, the servers taking turns) and ~20 for the
# int8 peer rows (this project's int8 export beside infinity --dtype int8; BENCH_PEERS_INT8=0 skips them).
# Run it on a quiet machine: a busy neighbour moves the ratios more than any change under test.
set -euo pipefail
SHARED=${1:-../shared/models}
WORK=${2:-/tmp/bench}
PORT=${BENCH_PORT:-31000}
mkdir -p "$WORK"
# 32 closed-loop clients of bge-large on 2 cores wait ~45 s each: the gateway's default 60 s is tight.
export BGE_GATEWAY_REQUEST_TIMEOUT_S=600

model() {  # $1 name: random weights of the shared config, built once
  [ -f "$WORK/$1/model.safetensors" ] || python -m bge_deploy.bench.random_model --config "$SHARED/$1" --out "$WORK/$1"
}
export_repo() {  # $1 name, $2 variant: precision, or precision-engine to override the default engine
  local engine=()
  [[ $2 == *-* ]] && engine=(--cpu-engine "${2#*-}")
  [ -d "$WORK/repo-$1-$2" ] || bge-export --model "$WORK/$1" --output "$WORK/repo-$1-$2" --workdir "$WORK/work-$1-$2" \
    --name "$1" --precision "${2%%-*}" "${engine[@]}"
}
wait_up() {  # $1 URL, $2 pid, $3 seconds: until the URL answers, the process ends or the time is up
  for _ in $(seq 1 "$3"); do
    curl -sf "$1" > /dev/null && return 0
    kill -0 "$2" 2> /dev/null || return 1
    sleep 1
  done
  return 1
}
STACK=""
serve() {  # $1 name, $2 variant (as export_repo)
  bge-serve --model "$WORK/$1" --repository "$WORK/repo-$1-$2" --name "$1" --host 127.0.0.1 --port "$PORT" \
    --triton-http-port $((PORT + 1)) --triton-grpc-port $((PORT + 2)) --triton-metrics-port $((PORT + 3)) \
    > "$WORK/stack-$1-$2.log" 2>&1 &
  STACK=$!
  wait_up "http://127.0.0.1:$PORT/health" "$STACK" 300 || {
    echo "run_figures: $1 $2 did not become healthy; see $WORK/stack-$1-$2.log" >&2
    return 1
  }
}
PEER=""
stop() {
  kill -TERM "$STACK" && wait "$STACK" || true
  if [ -n "$PEER" ]; then kill -TERM "$PEER" && wait "$PEER" || true; PEER=""; fi
}
trap stop EXIT
bench() {  # $1 name, $2 label, then bge-bench arguments
  local name=$1 label=$2
  shift 2
  bge-bench --model-dir "$WORK/$name" --model-name "$name" --target gateway \
    --gateway-url "http://127.0.0.1:$PORT" --triton-grpc-url "127.0.0.1:$((PORT + 2))" \
    --triton-metrics-url "http://127.0.0.1:$((PORT + 3))/metrics" \
    --threads 2 --no-progress --baseline-seconds 30 --output-dir "$WORK/figures-$label" "$@" \
    | grep -E "^ *(target|gateway|-)"
}

model bge-large-zh-v1.5
model bge-small-zh-v1.5
for variant in ${BENCH_VARIANTS-fp32 fp32-openvino int8}; do
  export_repo bge-large-zh-v1.5 "$variant"
  serve bge-large-zh-v1.5 "$variant"
  bench bge-large-zh-v1.5 "large-$variant-64" --concurrency 8 --lengths 64 --duration 40 --sorted-batch-size 32
  bench bge-large-zh-v1.5 "large-$variant-256" --concurrency 8 --lengths 256 --duration 50 --sorted-batch-size 16
  if [ "$variant" = fp32 ] && [ "${BENCH_MIXED:-1}" = 1 ]; then
    bench bge-large-zh-v1.5 large-fp32-mixed --concurrency 32 --lengths 8-512 --duration 60 --sorted-batch-size 32
  fi
  stop
done
if [ "${BENCH_SMALL:-1}" = 1 ]; then
  export_repo bge-small-zh-v1.5 fp32
  serve bge-small-zh-v1.5 fp32
  bench bge-small-zh-v1.5 small-fp32-16 --concurrency 32 --lengths 16 --duration 30 --sorted-batch-size 32
  stop
fi

# -- peers: the same workloads against infinity, in the same run on the same machine -------------------
INFINITY_BIN=${INFINITY_BIN:-$(command -v infinity_emb || true)}
IPORT=${INFINITY_PORT:-7997}
peer() {  # $1 model name, $2 infinity's --dtype (default auto: fp32 on CPU): started on the random weights
  # (its own warm-up takes minutes on 2 cores)
  local dtype=${2:-auto}
  HF_HUB_OFFLINE=1 "$INFINITY_BIN" v2 --model-id "$WORK/$1" --served-model-name "$1" --engine torch --device cpu \
    --dtype "$dtype" --port "$IPORT" > "$WORK/infinity-$1-$dtype.log" 2>&1 &
  PEER=$!
  wait_up "http://127.0.0.1:$IPORT/models" "$PEER" 1200 || {
    echo "run_figures: infinity for $1 did not come up; see $WORK/infinity-$1-$dtype.log" >&2
    return 1
  }
}
compare() {  # $1 name, $2 label, then bge-bench arguments: the side-by-side table and the memory line
  local name=$1 label=$2
  shift 2
  bge-bench --model-dir "$WORK/$name" --model-name "$name" --target gateway \
    --gateway-url "http://127.0.0.1:$PORT" --triton-grpc-url "127.0.0.1:$((PORT + 2))" \
    --triton-metrics-url "http://127.0.0.1:$((PORT + 3))/metrics" --peers "infinity=http://127.0.0.1:$IPORT" \
    --peer-model "$name" --no-baseline --no-progress --rounds "$ROUNDS" --output-dir "$WORK/figures-peers-$label" \
    "$@" | sed -n '/ vs infinity/,/^served memory/p'
}
# Each workload runs ROUNDS times, the two servers taking turns; the ratio is the median of the rounds'.
ROUNDS=${BENCH_ROUNDS:-5}
if [ -z "$INFINITY_BIN" ] && [ "${BENCH_PEERS:-1}${BENCH_PEERS_INT8:-1}" != 00 ]; then
  echo "run_figures: no infinity_emb (set INFINITY_BIN): peer tables skipped" >&2
  BENCH_PEERS=0 BENCH_PEERS_INT8=0
fi
if [ "${BENCH_PEERS:-1}" = 1 ]; then
  export_repo bge-large-zh-v1.5 fp32
  serve bge-large-zh-v1.5 fp32
  peer bge-large-zh-v1.5
  compare bge-large-zh-v1.5 large-b32 --concurrency 1 --texts-per-request 32 --lengths 64 --duration 20
  compare bge-large-zh-v1.5 large-b16 --concurrency 2 --texts-per-request 16 --lengths 128 --duration 20
  compare bge-large-zh-v1.5 large-c8 --concurrency 8 --texts-per-request 1 --lengths 64 --duration 20
  stop
  export_repo bge-small-zh-v1.5 fp32
  serve bge-small-zh-v1.5 fp32
  peer bge-small-zh-v1.5
  compare bge-small-zh-v1.5 small-c32 --concurrency 32 --texts-per-request 1 --lengths 16 --duration 10
  compare bge-small-zh-v1.5 small-b32 --concurrency 4 --texts-per-request 32 --lengths 128 --duration 10
  compare bge-small-zh-v1.5 small-mixed --concurrency 32 --texts-per-request 1 --lengths 8-510 --duration 10
  stop
fi
if [ "${BENCH_PEERS_INT8:-1}" = 1 ]; then  # int8 beside int8: our int8 export, infinity's torch quantize_dynamic
  export_repo bge-large-zh-v1.5 int8
  serve bge-large-zh-v1.5 int8
  peer bge-large-zh-v1.5 int8
  compare bge-large-zh-v1.5 large-int8-b32 --concurrency 1 --texts-per-request 32 --lengths 64 --duration 20
  compare bge-large-zh-v1.5 large-int8-b16 --concurrency 2 --texts-per-request 16 --lengths 128 --duration 20
  compare bge-large-zh-v1.5 large-int8-c8 --concurrency 8 --texts-per-request 1 --lengths 64 --duration 20
  stop
fi
trap - EXIT
echo "run_figures: JSON and plots under $WORK/figures-*"
