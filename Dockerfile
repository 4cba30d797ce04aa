# The image of the docker-compose stack: the package with its PostgreSQL and Redis
# extras, Flower, and the examples (the workers run examples/deploy.py).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY celery_resumable ./celery_resumable
RUN pip install --no-cache-dir ".[postgres,redis]" "flower>=2,<3"
COPY examples ./examples

RUN useradd --create-home app
USER app
