# One image for every worker and the ticker; the command picks which (docker-compose.yml,
# deploy/k8s). Dependencies come from the same hashed lock file as development and CI.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip sync --system --no-cache requirements.lock
COPY shared ./shared
COPY services ./services
# `python -m services.<name>` runs from /app; the packages need no installing.
RUN useradd --system --uid 10001 worker
USER worker
# Workers listen on all interfaces inside the container; probes and Prometheus reach them.
ENV RISK_HTTP_HOST=0.0.0.0 SHIPPING_HTTP_HOST=0.0.0.0
CMD ["python", "-m", "services.risk"]
