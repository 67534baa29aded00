# OpenAI-compatible gateway. Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t bge-gateway:0.1.0 .
FROM python:3.11-slim

WORKDIR /src
# setuptools maps all four import packages, so all four folders must be present.
# Dependencies first, in a layer of their own that is rebuilt only when pyproject.toml changes: empty
# package folders let pip resolve and install them; the code itself follows in seconds.
COPY pyproject.toml README.md ./
RUN mkdir -p export model_repository client/gateway deploy/serving deploy/bench deploy/gpu \
    && pip install --no-cache-dir ".[gateway]" \
    && pip uninstall -y bge-triton
COPY export/ export/
COPY model_repository/ model_repository/
COPY client/ client/
COPY deploy/__init__.py deploy/
# every bge_deploy package pyproject.toml lists; the serving path imports only deploy/serving
COPY deploy/serving/ deploy/serving/
COPY deploy/gpu/ deploy/gpu/
COPY deploy/bench/ deploy/bench/
RUN pip install --no-cache-dir --no-deps . && rm -rf /src

WORKDIR /
USER 10001:10001
EXPOSE 30000
CMD ["python", "-m", "bge_client.gateway"]
