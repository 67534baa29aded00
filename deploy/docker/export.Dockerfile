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
# A folder of wheels pip looks in first (an air-gapped mirror; the test suite mounts the host's torch
# CPU wheel there and sets TORCH_INDEX=""); empty: none.
ARG PIP_FIND_LINKS=""

WORKDIR /src
# Dependencies first, in a layer of their own that is rebuilt only when pyproject.toml changes: empty
# package folders let pip resolve and install them; the code itself follows in seconds.
COPY pyproject.toml README.md ./
RUN mkdir -p export model_repository client/gateway deploy/serving deploy/bench deploy/gpu \
    && PIP_BREAK_SYSTEM_PACKAGES=1 pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} ".[export]" \
    && PIP_BREAK_SYSTEM_PACKAGES=1 pip uninstall -y bge-triton
COPY export/ export/
COPY model_repository/ model_repository/
COPY client/ client/
COPY deploy/__init__.py deploy/
# every bge_deploy package pyproject.toml lists; the serving path imports only deploy/serving
COPY deploy/serving/ deploy/serving/
COPY deploy/gpu/ deploy/gpu/
COPY deploy/bench/ deploy/bench/
RUN PIP_BREAK_SYSTEM_PACKAGES=1 pip install --no-cache-dir --no-deps . && rm -rf /src

WORKDIR /
USER 1000:1000
ENTRYPOINT ["bge-export"]
