# ConvScope on the CPU. Build: `docker build -t convscope .`
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
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONVSCOPE_DATA_DIR=/data \
    TORCH_HOME=/data/torch

WORKDIR /app
# The CPU wheels of torch and torchvision keep the image small (no CUDA libraries).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2" "torchvision>=0.17"
COPY pyproject.toml README.md ./
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY models ./models
RUN pip install -e .

VOLUME ["/data"]
EXPOSE 8000
# /healthz answers whatever the Host header and needs no token.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
# `convscope serve` refuses a non-loopback --host without CONVSCOPE_ACCESS_TOKEN or CONVSCOPE_ALLOW_OPEN=true,
# and says which to set.
CMD ["convscope", "serve", "--host", "0.0.0.0", "--port", "8000"]
