# Triton on GPU: NVIDIA's container (TensorRT and ONNX Runtime backends included) plus what the
# tokenizer model, a Python-backend model, imports: this package and tokenizers.
#   docker build -f deploy/docker/triton-gpu.Dockerfile -t bge-triton-gpu:0.1.0 .
# Not the serve extra: it would add a second tritonserver (nvidia-pytriton) and a CPU onnxruntime.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

WORKDIR /src
COPY pyproject.toml README.md ./
COPY export/ export/
COPY model_repository/ model_repository/
COPY client/ client/
COPY deploy/*.py deploy/
# Installs into the system Python 3.10 that the image's Python-backend stub embeds.
RUN pip install --no-cache-dir . "tokenizers>=0.19" && rm -rf /src

WORKDIR /
# 1000 is triton-server, the image's own non-root user (runAsUser in Kubernetes).
USER 1000:1000
EXPOSE 8000 8001 8002
# NVIDIA's entrypoint stays: Model Analyzer (docker launch mode) runs its own tritonserver
# command in this image, and Kubernetes/compose replace the whole command line anyway.
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=none", \
     "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"]
