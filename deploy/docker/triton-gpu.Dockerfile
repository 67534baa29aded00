# Triton on GPU: NVIDIA's container (TensorRT and ONNX Runtime backends included) plus what the
# tokenizer model, a Python-backend model, imports: this package and tokenizers.
#   docker build -f deploy/docker/triton-gpu.Dockerfile -t bge-triton-gpu:0.1.0 .
# Not the serve extra: it would add a second tritonserver (nvidia-pytriton) and a CPU onnxruntime.
# 24.12, not 24.10: 24.12 fixes the SIGSEGV on a gRPC cancellation racing a request's completion
# (triton-inference-server/server#7368, RELIABILITY.md). The GPU exporter (export.Dockerfile,
# BASE=nvcr.io/nvidia/tensorrt:<release>-py3) must use the same release: a TensorRT plan only
# loads in the TensorRT version that built it. Bump both together.
FROM nvcr.io/nvidia/tritonserver:24.12-py3 AS deps

WORKDIR /src
# Dependencies first, in a layer of their own that is rebuilt only when pyproject.toml changes: empty
# package folders let pip resolve and install them; the code itself follows in seconds.
COPY pyproject.toml README.md ./
RUN mkdir -p export model_repository client/gateway deploy/serving deploy/bench deploy/gpu \
    && PIP_BREAK_SYSTEM_PACKAGES=1 pip install --no-cache-dir . "tokenizers>=0.19" \
    && PIP_BREAK_SYSTEM_PACKAGES=1 pip uninstall -y bge-triton

# The package as a wheel, built where a C compiler is: it carries the argv_secret helper that keeps the
# admin key off tritonserver's command line (deploy/serving/argv_secret.c). The served image gets no compiler.
FROM deps AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY export/ export/
COPY model_repository/ model_repository/
COPY client/ client/
COPY deploy/__init__.py deploy/
# every bge_deploy package pyproject.toml lists; the serving path imports only deploy/serving
COPY deploy/serving/ deploy/serving/
COPY deploy/gpu/ deploy/gpu/
COPY deploy/bench/ deploy/bench/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM deps
COPY --from=build /wheels /wheels
RUN PIP_BREAK_SYSTEM_PACKAGES=1 pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels /src \
    && python3 -c "from bge_deploy.serving.argv_secret import helper_library as h; assert h(), 'no argv_secret helper'"

WORKDIR /
# 1000 is triton-server, the image's own non-root user (runAsUser in Kubernetes).
USER 1000:1000
EXPOSE 8000 8001 8002
# NVIDIA's entrypoint stays: Model Analyzer (docker launch mode) runs its own tritonserver
# command in this image, and Kubernetes/compose replace the whole command line anyway.
# The default command is our launcher, as on CPU: it finds /opt/tritonserver (and its backends),
# restricts the admin APIs (BGE_TRITON_ADMIN_KEY), drains on SIGTERM and runs the watchdog.
# The same command line as deploy/compose.yaml and the GPU overlay; --ready-timeout stays under the
# 20 minutes the first load may spend building TensorRT kernels.
CMD ["bge-triton", "--model-repository=/models", "--http-port=8000", "--grpc-port=8001", \
     "--metrics-port=8002", "--exit-timeout=30", "--ready-timeout=1140", "--verbose"]
