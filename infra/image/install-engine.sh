#!/usr/bin/env bash
# Install a container engine when none is present (Debian/Ubuntu, as root): podman + buildah, runc (for hosts
# where crun's setrlimit is refused: see containers.conf), and debootstrap for the local base image when
# registries are unreachable.
set -euo pipefail
if (command -v docker >/dev/null && docker info >/dev/null 2>&1) || command -v podman >/dev/null || \
   command -v buildah >/dev/null; then
  if [ "$(id -u)" = 0 ] && { ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; }; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap runc >/dev/null
  fi
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "error: no container engine; install podman and buildah (or docker)" >&2
  exit 2
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap runc >/dev/null
