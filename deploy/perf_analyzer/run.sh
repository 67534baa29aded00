#!/usr/bin/env bash
# perf_analyzer against the bge ensemble over gRPC: one measurement per concurrency level, one CSV each.
#
#   deploy/perf_analyzer/run.sh                          # 64-token texts, 1 per request, 1..64 in flight
#   DATA=input_data_mixed.json BATCH=8 deploy/perf_analyzer/run.sh
#   deploy/perf_analyzer/run.sh --percentile 99          # extra arguments go to every perf_analyzer call
#
# Settings (environment): MODEL, URL (gRPC host:port), DATA (file in this folder or a path), BATCH (texts
# per request, <= the model's max_batch_size), CONCURRENCY (space-separated levels), INTERVAL_MS
# (measurement window), OUT (folder for the CSV files).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL="${MODEL:-bge-large-zh-v1.5}"
URL="${URL:-localhost:8001}"
DATA="${DATA:-input_data_64.json}"
BATCH="${BATCH:-1}"
CONCURRENCY="${CONCURRENCY:-1 2 4 8 16 32 64}"
INTERVAL_MS="${INTERVAL_MS:-10000}"
OUT="${OUT:-$PWD/perf_analyzer_results}"

[[ -f "$DATA" ]] || DATA="$here/$DATA"
if [[ ! -f "$DATA" ]]; then
  echo "run.sh: no input data file $DATA" >&2
  exit 2
fi
if ! command -v perf_analyzer >/dev/null 2>&1; then
  echo "run.sh: perf_analyzer not found; run this inside nvcr.io/nvidia/tritonserver:<version>-py3-sdk" >&2
  exit 2
fi

mkdir -p "$OUT"
name="$(basename "$DATA" .json)"
for c in $CONCURRENCY; do
  echo "== $MODEL at $URL: $name, $BATCH text(s) per request, concurrency $c"
  perf_analyzer \
    -m "$MODEL" -i grpc -u "$URL" \
    -b "$BATCH" --input-data "$DATA" \
    --concurrency-range "$c:$c" \
    --measurement-mode time_windows --measurement-interval "$INTERVAL_MS" \
    -f "$OUT/${name}_b${BATCH}_c${c}.csv" \
    "$@"
done
echo "CSV files (one per concurrency level, with p50/p90/p95/p99 columns) in $OUT"
