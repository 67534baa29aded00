"""bge-bench: throughput and latency of the served model against an in-process baseline.

Runs anywhere Python runs (no perf_analyzer): texts of exact token lengths (`workload`), closed-loop
load over the OpenAI gateway or Triton gRPC (`drivers`), the same texts through sentence-transformers
in this process (`baseline`), Triton's encoder counters before and after (`server_stats`), and a table,
a JSON file and a plot (`report`). `local_stack` exports and serves a model itself for `--self-contained`.
"""
