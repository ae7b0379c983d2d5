# The bridge as one image: `serve` by default; the same image runs `worker` and `migrate`:
#   docker run --env-file .env IMAGE migrate
#   docker run --env-file .env IMAGE worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 bridge

# A regular (not editable) install, without the dev extras; the sources go afterwards.
COPY pyproject.toml README.md /tmp/src/
COPY bridge /tmp/src/bridge
COPY jobs /tmp/src/jobs
RUN pip install /tmp/src && rm -rf /tmp/src

# The working directory is where a relative BRIDGE_DATABASE_URL and a .env file are.
USER bridge
WORKDIR /home/bridge

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["cryptolens-bridge"]
CMD ["serve", "--host", "0.0.0.0"]
