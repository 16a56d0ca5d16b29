#!/usr/bin/env bash
# Build the job image with whatever engine exists: docker (with a daemon), podman, or buildah.
#
#   infra/image/build.sh                  # tag cifar10-job:latest
#   IMAGE=cifar10-job:dev VARIANT=gpu infra/image/build.sh
#   IMAGE=cifar10-job:serve VARIANT=serve infra/image/build.sh   # the model server (make image-serve)
#   BASE_IMAGE=python:3.11-slim-bookworm@sha256:... infra/image/build.sh
#
# Without BASE_IMAGE, and when the default base cannot be pulled (no registry reachable), a local
# Debian bookworm base with python3 is made once with debootstrap (infra/image/make-base.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-cifar10-job:latest}
VARIANT=${VARIANT:-cpu}
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' job/__init__.py)  # the one place the version is written
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

engine=""
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker
elif command -v podman >/dev/null 2>&1; then engine=podman
elif command -v buildah >/dev/null 2>&1; then engine=buildah
else
  echo "error: no container engine found; install docker, podman or buildah (apt-get install podman buildah)" >&2
  exit 2
fi

if [ -z "${BASE_IMAGE:-}" ]; then
  BASE_IMAGE=python:3.11-slim-bookworm
  if [ "$engine" != docker ] && ! timeout 60 $engine pull -q "docker.io/library/$BASE_IMAGE" >/dev/null 2>&1; then
    BASE_IMAGE=$(infra/image/make-base.sh "$engine")
    echo "registry unreachable: using the local base image $BASE_IMAGE" >&2
  fi
fi

args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VARIANT=$VARIANT" --build-arg "REVISION=$REVISION" --build-arg "VERSION=$VERSION"
      --build-arg "CREATED=$CREATED" -t "$IMAGE" -f Dockerfile .)
if [ "$VARIANT" = serve ]; then args+=(--target serve); fi  # the model server's stage (make image-serve)
start=$(date +%s)
case "$engine" in
  docker) docker build "${args[@]}" ;;
  # chroot isolation and the host network: what works in an unprivileged sandbox without registries;
  # the host's CA bundle lets pip inside the build reach the package index.
  podman) podman build --isolation=chroot --network=host -v /etc/ssl/certs:/etc/ssl/certs:ro "${args[@]}" ;;
  buildah) buildah bud --isolation=chroot --network=host -v /etc/ssl/certs:/etc/ssl/certs:ro "${args[@]}" ;;
esac
echo "built $IMAGE with $engine in $(( $(date +%s) - start ))s" >&2
