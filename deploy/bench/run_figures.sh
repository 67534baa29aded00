#!/usr/bin/env bash
# Every row of BENCHMARKS.md's gateway table in one run: bge-large fp32 and int8 at 64 and 256 tokens
# (concurrency 8), fp32 mixed 8..512 tokens (concurrency 32), bge-small 16 tokens (concurrency 32).
# Each bge-bench call measures its own in-process PyTorch baseline and prints the ratio. fp32 runs on
# both CPU engines: OpenVINO (the default) and onnxruntime (--cpu-engine onnxruntime).
#
#   deploy/bench/run_figures.sh [SHARED_MODELS_DIR] [WORK_DIR]
#
# A subset: BENCH_VARIANTS="fp32 fp32-onnxruntime" BENCH_MIXED=0 BENCH_SMALL=0 deploy/bench/run_figures.sh
#
# SHARED_MODELS_DIR holds the real configs/tokenizers (default ../shared/models); random weights of
# exactly that shape are built once into WORK_DIR (default /tmp/bench). About 26 minutes on 2 cores.
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
STACK=""
serve() {  # $1 name, $2 variant (as export_repo)
  bge-serve --model "$WORK/$1" --repository "$WORK/repo-$1-$2" --name "$1" --host 127.0.0.1 --port "$PORT" \
    --triton-http-port $((PORT + 1)) --triton-grpc-port $((PORT + 2)) --triton-metrics-port $((PORT + 3)) \
    > "$WORK/stack-$1-$2.log" 2>&1 &
  STACK=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && return 0
    kill -0 "$STACK" 2> /dev/null || break
    sleep 1
  done
  echo "run_figures: $1 $2 did not become healthy; see $WORK/stack-$1-$2.log" >&2
  return 1
}
stop() {
  kill -TERM "$STACK" && wait "$STACK" || true
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
for variant in ${BENCH_VARIANTS:-fp32 fp32-onnxruntime int8}; do
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
trap - EXIT
echo "run_figures: JSON and plots under $WORK/figures-*"
