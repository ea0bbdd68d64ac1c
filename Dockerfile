# syntax=docker/dockerfile:1
# Overwatch Cloud API image. Two stages: the builder resolves dependencies into
# a virtualenv (sentence-transformers pulls PyTorch, so this stage is large and
# cached separately from the code); the runtime stage gets only the venv and
# the files the service reads at run time.

# ------------------------------------------------------------------ builder
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, exactly as uv.lock pins them (the same lock `make install`
# and CI use), from pyproject.toml and uv.lock alone: editing code does not
# reinstall PyTorch.
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_LINK_MODE=copy UV_COMPILE_BYTECODE=0
RUN --mount=type=cache,target=/root/.cache/pip pip install "uv==0.13.9"
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the package itself (for the `overwatch` command).
COPY README.md main.py ./
COPY api ./api
COPY graph ./graph
COPY relational ./relational
COPY embeddings ./embeddings
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ------------------------------------------------------------------ runtime
FROM python:3.11-slim AS runtime

# PYTHONPATH=/app makes `api`, `graph`, ... import from /app rather than from
# site-packages, so the code finds alembic.ini, migrations/ and cypher/ next to it.
# No ENVIRONMENT on purpose: an image runs as production unless told otherwise,
# so it refuses the repository's default secrets (docker-compose.yml opts in).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    HOME=/home/overwatch \
    HF_HOME=/home/overwatch/.cache/huggingface

RUN groupadd --system --gid 10001 overwatch \
    && useradd --system --uid 10001 --gid overwatch --create-home \
        --home-dir /home/overwatch --shell /usr/sbin/nologin overwatch

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Owned by root and read-only for the service user.
COPY main.py alembic.ini ./
COPY api ./api
COPY graph ./graph
COPY relational ./relational
COPY embeddings ./embeddings
COPY migrations ./migrations
COPY cypher ./cypher

USER overwatch

EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]

CMD ["overwatch", "serve", "--host", "0.0.0.0", "--port", "8000"]
