#!/usr/bin/env bash
# Make a minimal Debian bookworm image with python3 + venv + pip, for machines that cannot pull base
# images. Uses the machine's own Debian mirror (from its apt sources). Prints the image name.
set -euo pipefail
engine=${1:-podman}
name=localhost/bookworm-python:3.11
if $engine image exists "$name" 2>/dev/null || $engine inspect "$name" >/dev/null 2>&1; then
  echo "$name"; exit 0
fi
# The first main Debian archive in the apt sources, one-line ("deb URI suite") or deb822 ("URIs: URI") format.
mirror=$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
  | awk '$1 == "URIs:" || $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }')
if [ -z "$mirror" ]; then
  echo "error: no Debian mirror in /etc/apt/sources.list*; cannot make a local base image" >&2; exit 2
fi
root=$(mktemp -d /tmp/bookworm-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$root" "$mirror" >&2
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | $engine import --change 'CMD ["/bin/bash"]' - "$name" >&2
echo "$name"
