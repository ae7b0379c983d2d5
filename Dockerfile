# syntax=docker/dockerfile:1
# The bridge as one image for every role: `serve` by default, and the same image runs
# `worker`, `migrate` and `sandbox` (see compose.yaml):
#   docker run --env-file .env IMAGE migrate
#   docker run --env-file .env IMAGE worker

# -- build: wheels for the bridge and every dependency, with the compilers this needs ---
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies first, the versions and hashes of requirements.lock (`make lock` writes it
# from pyproject.toml): every image gets what the tests ran against, and a change to the
# code reuses this layer.
COPY requirements.lock ./
RUN pip wheel --require-hashes --wheel-dir /wheels -r requirements.lock
# Then the code, as a regular (not editable) wheel, its dependencies already there.
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY jobs ./jobs
RUN pip wheel --no-deps --wheel-dir /wheels .

# -- runtime: the wheels installed, no compilers, no sources, not root ---------------------
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 bridge

COPY --from=build /wheels /wheels
# Only the wheels built above: nothing is fetched, so nothing unpinned can slip in.
RUN pip install --no-index --find-links=/wheels /wheels/cryptolens_bridge-*.whl \
    && rm -rf /wheels

# The working directory is where a relative BRIDGE_DATABASE_URL and a .env file are.
USER 10001
WORKDIR /home/bridge

EXPOSE 8000
# /healthz answers while the process serves; compose overrides it for worker and sandbox.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["cryptolens-bridge"]
CMD ["serve", "--host", "0.0.0.0"]
