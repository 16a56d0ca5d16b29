#!/usr/bin/env bash
# Install a container engine when none is present (Debian/Ubuntu, as root): podman + buildah, and
# debootstrap for the local base image when registries are unreachable.
set -euo pipefail
if (command -v docker >/dev/null && docker info >/dev/null 2>&1) || command -v podman >/dev/null || \
   command -v buildah >/dev/null; then
  command -v debootstrap >/dev/null || [ "$(id -u)" != 0 ] || \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "error: no container engine; install podman and buildah (or docker)" >&2
  exit 2
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap >/dev/null
