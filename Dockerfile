# ConvScope on the CPU. Build: `docker build -t convscope .`
# Layers, slowest first: torch (CPU wheels), then the other dependencies (from pyproject.toml only), then the
# code; a code change rebuilds only the steps from `COPY README.md` on, and a pyproject change does not
# reinstall torch.
# The server runs as the unprivileged user convscope (uid 10001), which owns /data (uploads, catalogue,
# downloaded weights); the code stays root-owned and read-only to it.
#
# The container listens on 0.0.0.0, so anyone who can reach the port could upload files and start jobs. It
# therefore refuses to start without an access token (the API and every upload then need it):
#   export CONVSCOPE_ACCESS_TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
#   docker run -p 8000:8000 -e CONVSCOPE_ACCESS_TOKEN convscope
# and open http://localhost:8000/login once in each browser (or hand out http://<host>:8000/login?token=...).
# Scripts send `Authorization: Bearer $CONVSCOPE_ACCESS_TOKEN`.
# Only on a network you trust, run it open instead: `docker run -p 8000:8000 -e CONVSCOPE_ALLOW_OPEN=true convscope`.
#
# Host names: by default the server answers only to localhost / 127.0.0.1 / [::1] (DNS-rebinding protection),
# which is what `-p 8000:8000` gives the machine running Docker. For other machines, list the names they use:
#   -e CONVSCOPE_ALLOWED_HOSTS='["convscope.local", "192.168.1.20", "localhost", "127.0.0.1"]'
# (a JSON list; ["*"] accepts any name and is only allowed together with an access token).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONVSCOPE_DATA_DIR=/data \
    TORCH_HOME=/data/torch
# pipefail: a failing command on the left of a pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Before VOLUME: what a Dockerfile changes in a volume's directory after declaring it is discarded.
RUN useradd --create-home --uid 10001 --user-group convscope \
    && mkdir -p /data/torch \
    && chown -R 10001:10001 /data

WORKDIR /app
# The CPU wheels of torch and torchvision keep the image small (no CUDA libraries). First, so that no other
# package's requirement on torch pulls the CUDA build from PyPI. Same floors as pyproject.toml (a test checks).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.4" "torchvision>=0.19"

# The rest of the dependencies, read from pyproject.toml alone, so this layer survives code changes. The
# constraint pins the CPU torch just installed: a dependency wanting another torch fails the build instead of
# silently replacing it with the CUDA build.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt \
    && pip freeze | grep -E '^torch(vision)?==' > /tmp/torch-constraints.txt \
    && pip install -c /tmp/torch-constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/torch-constraints.txt

# The code. Editable, because app/config.py finds templates/, static/ and models/ next to app/.
COPY README.md ./
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY models ./models
RUN pip install --no-deps -e .

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# /healthz answers whatever the Host header and needs no token.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# `convscope serve` refuses a non-loopback --host without CONVSCOPE_ACCESS_TOKEN or CONVSCOPE_ALLOW_OPEN=true,
# and says which to set.
CMD ["convscope", "serve", "--host", "0.0.0.0", "--port", "8000"]
