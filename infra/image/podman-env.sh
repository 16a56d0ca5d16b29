#!/usr/bin/env bash
# Print the CONTAINERS_CONF that `podman run` needs on this host: nothing where the default runtime works, else
# infra/image/containers.conf (runc + explicit ulimits). Usage: export CONTAINERS_CONF=$(infra/image/podman-env.sh IMAGE)
set -uo pipefail
image=${1:?usage: podman-env.sh IMAGE}
conf="$(cd "$(dirname "$0")" && pwd)/containers.conf"
if podman run --rm --entrypoint true "$image" >/dev/null 2>&1; then exit 0; fi
if CONTAINERS_CONF="$conf" podman run --rm --entrypoint true "$image" >/dev/null 2>&1; then echo "$conf"; exit 0; fi
echo "error: podman run fails with the default runtime and with $conf (is runc installed?)" >&2
exit 2
