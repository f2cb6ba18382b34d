# syntax=docker/dockerfile:1.7
# Triton Inference Server with the refiner's Gemma-3 model repository (Python backend).
# Based on NVIDIA's image; adds what services/refiner/triton/gemma3/1/model.py imports
# (torch, transformers, pillow). The weights are NOT in the image: mount the Hugging Face folder
# of the checkpoint at /models/gemma3 (the `model_path` default in config.pbtxt).
#
# Build from the repository root:
#   docker build -f deploy/docker/triton.Dockerfile -t genir-triton:0.1.0 .
# CUDA line: Triton 25.10 is built on CUDA 13.0, and the torch installed into it must be a CUDA 13
# wheel (cu130) as well, like the services image's; change CUDA_MAJOR, TORCH_INDEX_URL and
# TRITON_TAG together (tests/deploy checks them against NVIDIA's release notes' CUDA versions).
# Run (what the Kubernetes Deployment does):
#   docker run --gpus 1 --shm-size 1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \
#     -v /srv/models/gemma-3-4b-it:/models/gemma3:ro genir-triton:0.1.0
# For Gemma-3 at scale, the `<yy.mm>-vllm-python-py3` image with the vLLM backend is the other route
# (a different model repository; see services/refiner/README.md).

ARG TRITON_TAG=25.10-py3
FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}
ARG TRITON_TAG
ARG TORCH_VERSION=2.13.0
ARG CUDA_MAJOR=13
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
# The image's system Python runs the backend stub; install into it (PEP 668 marker overridden on purpose).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
# NVIDIA's images set CUDA_VERSION; the base and the torch wheel must both be on CUDA_MAJOR.
RUN [ "${CUDA_VERSION%%.*}" = "${CUDA_MAJOR}" ] || { echo "Triton ${TRITON_TAG} has CUDA ${CUDA_VERSION}, CUDA_MAJOR=${CUDA_MAJOR}"; exit 1; }
RUN python3 -m pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && python3 -m pip install "transformers>=5.20,<6" "accelerate>=1.10" safetensors tokenizers sentencepiece pillow \
    && python3 -c "import sys, torch; got = (torch.version.cuda or 'none').split('.')[0]; \
sys.exit(0 if got == '${CUDA_MAJOR}' else f'torch {torch.__version__} has CUDA {torch.version.cuda}, CUDA_MAJOR=${CUDA_MAJOR}')"
COPY services/refiner/triton /opt/genir/model_repository
# triton-server (uid 1000) is the unprivileged user NVIDIA's image ships.
USER 1000:1000
ENV HOME=/tmp HF_HOME=/tmp/hf HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
EXPOSE 8000 8001 8002
# /dev/shm must be large enough for the Python backend's tensors (--shm-size, or a memory emptyDir).
CMD ["tritonserver", "--model-repository=/opt/genir/model_repository", "--strict-readiness=true", \
     "--exit-on-error=true", "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"]
