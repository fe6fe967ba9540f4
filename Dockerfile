# syntax=docker/dockerfile:1
# turnscale: one image for both binaries (`turnscale relay`, `turnscale scaler`).
#   docker build -t ghcr.io/turnscale/turnscale:0.1.0 .
# The package is installed from this repository with the pinned dependency set
# (constraints.txt) into a virtualenv, which the runtime stage copies alone.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Extra pip options, empty by default. `make image` builds offline: it mounts a wheelhouse
# made from constraints.txt for the build only and passes "--no-index --find-links ...".
ARG PIP_INSTALL_OPTIONS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# python3: the name both the default base and a Debian-built base have.
RUN python3 -m venv /opt/turnscale
WORKDIR /src
# The context is what .dockerignore lets through: pyproject.toml, constraints.txt,
# README.md and the Python packages the distribution is made of.
COPY . .
RUN /opt/turnscale/bin/pip install --no-compile ${PIP_INSTALL_OPTIONS} -c constraints.txt . \
 && /opt/turnscale/bin/python -m compileall -q /opt/turnscale

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 turnscale \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin turnscale
COPY --from=build /opt/turnscale /opt/turnscale
ENV PATH=/opt/turnscale/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Runs as this user with a read-only root filesystem (the manifests mount /tmp).
USER 10001:10001
# relay: TURN on 3478 (UDP and TCP), health on 8086; scaler: HTTP 8080, gRPC 9090.
EXPOSE 3478/udp 3478/tcp 8086/tcp 8080/tcp 9090/tcp
ENTRYPOINT ["turnscale"]
CMD ["--help"]
