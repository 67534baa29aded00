# Triton on CPU, no NVIDIA base image: the tritonserver binary and Python backend come from the
# nvidia-pytriton wheel (serve extra) and run through our bge-triton launcher.
#   docker build -f deploy/docker/triton-cpu.Dockerfile -t bge-triton-cpu:0.1.0 .
# glibc >= 2.35 is required by the wheel's binary; Debian bookworm has 2.36.
FROM python:3.11-slim AS deps

WORKDIR /src
# Dependencies first, in a layer of their own that is rebuilt only when pyproject.toml changes: empty
# package folders let pip resolve and install them; the code itself follows in seconds.
COPY pyproject.toml README.md ./
RUN mkdir -p export model_repository client/gateway deploy/serving deploy/bench deploy/gpu \
    && pip install --no-cache-dir ".[serve]" \
    && pip uninstall -y bge-triton

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
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels /src \
    && python -c "from bge_deploy.serving.argv_secret import helper_library as h; assert h(), 'no argv_secret helper'"

WORKDIR /
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT ["bge-triton"]
CMD ["--model-repository=/models", "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002", "--verbose"]
