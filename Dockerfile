# CPU image of the factory: builds recipes and verifies releases (TensorRT targets need the NVIDIA base image and the
# `tensorrt` extra, which this image does not install).
#   docker build -t factory .
#   docker run --rm -v "$PWD/runs:/app/runs" factory build recipes/tinyfar_synthdistill.yaml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first (exact pins), so code edits do not re-install them.
COPY pyproject.toml constraints.txt README.md ./
COPY factory ./factory
RUN pip install -c constraints.txt .

COPY recipes ./recipes
COPY deploy ./deploy

ENTRYPOINT ["factory"]
CMD ["--help"]
