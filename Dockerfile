# ConvScope on the CPU: `docker build -t convscope .` then `docker run -p 8000:8000 convscope`.
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
CMD ["convscope", "serve", "--host", "0.0.0.0", "--port", "8000"]
