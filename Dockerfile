# CPU image of the factory. Its steps are the Makefile's targets, so it installs what a fresh clone's `make demo` does
# (the .venv from the exact pins; torch==2.14.1 from PyPI is the CUDA build on x86-64, so the image carries CUDA wheels
# it never uses) and its command is `make demo`: recipes/tinyfar_synthdistill.yaml on the procedural faces.
#   docker build -t factory .
#   docker run --rm -v "$PWD/runs:/app/runs" factory          # make demo; the release lands in ./runs
#   docker run --rm -v "$PWD/runs:/app/runs" factory factory build recipes/tinyfar_synthdistill.yaml --set ...
#   docker run --rm factory factory --help                    # any command after the image name (.venv/bin is on PATH)
# It runs as the user `factory` (uid 1000): a mounted runs/ must be writable by it, or add --user "$(id -u):$(id -g)".
# TensorRT targets need the GPU image, deploy/docker/gpu.Dockerfile (see deploy/docker/README.md).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# make runs the image's steps. DL3008 (pin apt versions) is ignored on purpose: Debian's mirrors drop a superseded
# version, so a pinned `make=...` stops building within months; the base image's tag fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --home-dir /app --uid 1000 --no-log-init --shell /bin/bash factory

USER factory
WORKDIR /app
ENV PATH=/app/.venv/bin:$PATH

# Dependencies first, in their own layer: it depends only on the pin files and the Makefile, so code and README edits
# do not re-install them. `make install` installs the package editable; an empty `factory` package (and README) stand
# in for the code here, which maps `factory` to /app/factory, where the real code is copied below.
COPY --chown=factory:factory pyproject.toml constraints.txt Makefile ./
RUN mkdir factory && touch factory/__init__.py README.md && make install

COPY --chown=factory:factory README.md ./
COPY --chown=factory:factory factory ./factory
COPY --chown=factory:factory recipes ./recipes
COPY --chown=factory:factory deploy ./deploy

CMD ["make", "demo"]
