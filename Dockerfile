FROM python:3.11-slim-bookworm

# bubblewrap and socat run agents in their sandbox; tini reaps CLI children.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap socat tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DEBUG=0 SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0
# /workspace is the (empty) working directory the sandbox mounts each conversation's files over.
# docker-compose.yml mounts volumes at /app/var/runs and /app/var/media; a new volume starts as a copy of the
# directory it covers, so making them here lets the platform user write there.
RUN useradd --create-home --uid 10001 platform && mkdir -p /app/var/runs /app/var/media /workspace && chown -R platform /app/var
USER platform

ENV PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=config.settings
EXPOSE 8000
ENTRYPOINT ["tini", "--"]
# config.serve is Daphne with stream tokens kept out of its access log.
CMD ["python", "-m", "config.serve", "-b", "0.0.0.0", "-p", "8000", "config.asgi:application"]
