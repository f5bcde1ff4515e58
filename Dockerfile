# One image for every actsearch process: migrate, api and GPU workers (see docker-compose.yml).
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ACTSEARCH_HOME=/var/lib/actsearch

WORKDIR /app
# Torch first (the CUDA build from PyPI), so code changes do not re-download it.
RUN pip install "torch>=2.4" "torchvision>=0.19"
COPY pyproject.toml README.md ./
COPY service ./service
COPY search_space ./search_space
COPY workers ./workers
RUN pip install . "optuna-dashboard>=0.15"

RUN useradd --create-home --uid 1000 actsearch && mkdir -p /var/lib/actsearch \
    && chown actsearch /var/lib/actsearch
USER actsearch
EXPOSE 8000
ENTRYPOINT ["actsearch"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
