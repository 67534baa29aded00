# The exporter (bge-export): HF model -> ONNX -> Triton model repository.
#   CPU: docker build -f deploy/docker/export.Dockerfile -t bge-export-cpu:0.1.0 .
#   GPU: docker build -f deploy/docker/export.Dockerfile -t bge-export-gpu:0.1.0 \
#          --build-arg BASE=nvcr.io/nvidia/tensorrt:24.12-py3 --build-arg TORCH_INDEX= .
# The GPU base is NVIDIA's TensorRT container of the same release as the server image
# (tritonserver:24.12, triton-gpu.Dockerfile): a TensorRT plan only loads in the TensorRT version
# that built it, so the two release tags move together.
ARG BASE=python:3.11-slim
FROM ${BASE}
# CPU builds take torch from the CPU wheel index (a default torch wheel drags in CUDA, GBs).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

WORKDIR /src
COPY pyproject.toml README.md ./
COPY export/ export/
COPY model_repository/ model_repository/
COPY client/ client/
COPY deploy/__init__.py deploy/
# every bge_deploy package pyproject.toml lists; the serving path imports only deploy/serving
COPY deploy/serving/ deploy/serving/
COPY deploy/gpu/ deploy/gpu/
COPY deploy/bench/ deploy/bench/
# PIP_BREAK_SYSTEM_PACKAGES: a base whose system Python is marked externally managed (PEP 668) is
# still ours to install into; python:3.11-slim has no such mark and ignores it.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} ".[export]" \
    && rm -rf /src

WORKDIR /
USER 1000:1000
ENTRYPOINT ["bge-export"]
