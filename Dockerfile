# syntax=docker/dockerfile:1
# fusion-serve: the service on its default model (models/), CUDA-capable.
# The torch/torchvision wheels from PyPI bundle the CUDA libraries; the host brings the NVIDIA driver (NVIDIA
# Container Toolkit, `--gpus` or compose's device reservation). Without a GPU the same image runs on the CPU.
#   docker build -t fusion-serve .
#   docker run --gpus all -p 8000:8000 fusion-serve
#   docker run -p 8000:8000 -v "$PWD/my-models:/srv/fusion/models:ro" fusion-serve   # other models, CPU
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Dependencies alone (torch 2.14.1 / torchvision 0.29.1 and their CUDA libraries: gigabytes), read from
# pyproject.toml: this layer is rebuilt only when the dependencies change, never for a code change. The runtime stage
# builds on this one rather than copying the venv out of it, which would store those gigabytes twice while building.
FROM base AS deps
# Where pip looks for packages (pip reads these variables): PyPI unless given, e.g. a mirror or a local index:
#   docker build --build-arg PIP_INDEX_URL=https://pypi.example.com/simple -t fusion-serve .
# Build arguments are recorded in the image's history: an index that needs credentials belongs in a pip.conf given
# as a build secret, not in the URL.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
COPY pyproject.toml /tmp/deps/
RUN python -m venv /opt/venv \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/deps/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/deps/requirements.txt \
    && pip install --no-cache-dir --requirement /tmp/deps/requirements.txt \
    && rm -rf /tmp/deps

# The service itself, as a wheel without dependencies.
FROM base AS wheel
# The build backend (setuptools) comes from the same place.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
WORKDIR /build
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM deps AS runtime
LABEL org.opencontainers.image.title="fusion-serve" \
      org.opencontainers.image.description="REST inference for multimodal (image + text + audio) fusion classifiers"
RUN groupadd --system --gid 10001 fusion \
    && useradd --system --uid 10001 --gid fusion --create-home --home-dir /home/fusion --shell /usr/sbin/nologin fusion
# Copied, not bind-mounted (`RUN --mount=from=wheel`): Buildah, Podman's builder, reuses a cached RUN layer even when
# the mounted stage changed (containers/buildah#6609, fixed by #6845; Debian 12 ships 1.28), so a rebuild after a
# code change would keep the old code. The cost: the wheel (about 1 MB) stays in a lower layer.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
WORKDIR /srv/fusion
# The default model, baked in and owned by root (read-only to the service). Mount a folder of artifacts over
# /srv/fusion/models to serve other models.
COPY models/ ./models/
ENV FUSION_MODELS_DIR=/srv/fusion/models \
    FUSION_HOST=0.0.0.0 \
    FUSION_PORT=8000
VOLUME ["/srv/fusion/models"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "app.probe", "/healthz"]
# The same command as README's: a worker per CPU of the container (FUSION_WORKERS), and on a GPU one model owner
# per device that every worker feeds (FUSION_MODEL_PLACEMENT=auto).
CMD ["fusion-serve", "serve"]
