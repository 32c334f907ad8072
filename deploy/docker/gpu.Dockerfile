# GPU image of the factory (x86-64, NVIDIA GPU): trains teacher and student on CUDA and builds TensorRT engines on the
# GPU it runs on. Like the CPU image (../../Dockerfile) its steps are the Makefile's targets; build from the repo root:
#   docker build -f deploy/docker/gpu.Dockerfile -t factory-gpu .
#   docker run --rm --gpus all -v "$PWD/runs:/app/runs" factory-gpu          # make demo, trained on CUDA (DEMO_ARGS)
#   docker run --rm --gpus all factory-gpu factory build RECIPE --set teacher.train.device=cuda ...   # any command
# TensorRT engines are built on the GPU that runs them, by the x86-gpu-tensorrt bundle's runner (a manual target),
# here in an interactive container (`docker run --rm -it --gpus all -v "$PWD/runs:/app/runs" factory-gpu bash`):
#   make demo
#   factory deploy bundle recipes/tinyfar_synthdistill.yaml --target x86-gpu-tensorrt $DEMO_ARGS
#   (cd runs/tinyfar_synthdistill/bundles/x86-gpu-tensorrt && python run_target.py)     # builds the engines here
#   factory deploy validate recipes/tinyfar_synthdistill.yaml --target x86-gpu-tensorrt $DEMO_ARGS \
#     --report runs/tinyfar_synthdistill/bundles/x86-gpu-tensorrt/report.json
# Jetson: deploy/docker/README.md (no image; the bundle runs on JetPack's own python3 and TensorRT).
#
# Base: NVIDIA's TensorRT container 25.11, which carries TensorRT 10.14.1 (Python package and trtexec), CUDA 13.0.2
# and Ubuntu 24.04 with its python3 (3.12), as published for this tag; to be confirmed on a pull with
#   docker run --rm nvcr.io/nvidia/tensorrt:25.11-py3 \
#     python3 -c "import sys, tensorrt; print(sys.version, tensorrt.__version__)"
# The tag is chosen for CUDA 13.0: torch==2.14.1 from PyPI is a CUDA 13.0 build on x86-64 that brings its own CUDA
# runtime (the nvidia-* wheels pinned in constraints.txt) and does not use the image's, while TensorRT and the
# bundle's runner (libcudart through ctypes, from /usr/local/cuda) use the image's CUDA 13.0. CUDA 13 needs a host
# driver >= 580.
FROM nvcr.io/nvidia/tensorrt:25.11-py3

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive

# make runs the image's steps and python3-venv makes the Makefile's .venv (Ubuntu splits venv from python3). DL3008
# (pin apt versions) is ignored on purpose: Ubuntu's mirrors drop superseded versions, so a pin stops building within
# months; the base image's tag fixes the release. Ubuntu 24.04 images already hold uid 1000 (`ubuntu`): no fixed uid.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --home-dir /app --no-log-init --shell /bin/bash factory

USER factory
WORKDIR /app
# make reads these from the environment, so every make in the container (the install below, `make demo`, a shell's)
# agrees: the `tensorrt` extra (its install stamp names it); a venv that sees the system site-packages, so the extra
# is met by the base image's TensorRT rather than a second copy from PyPI (the exact pins still go into the venv, in
# front of the base image's versions); and the demo's teacher and student trained on CUDA.
ENV PATH=/app/.venv/bin:$PATH \
    EXTRAS=tensorrt \
    VENV_ARGS=--system-site-packages \
    DEMO_ARGS="--set teacher.train.device=cuda --set distill.train.device=cuda"

# Dependencies first, in their own layer (../../Dockerfile says why the empty stand-in package).
COPY --chown=factory:factory pyproject.toml constraints.txt Makefile ./
RUN mkdir factory && touch factory/__init__.py README.md && make install

COPY --chown=factory:factory README.md ./
COPY --chown=factory:factory factory ./factory
COPY --chown=factory:factory recipes ./recipes
COPY --chown=factory:factory deploy ./deploy

CMD ["make", "demo"]
