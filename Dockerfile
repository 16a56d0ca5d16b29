# syntax=docker/dockerfile:1
# CIFAR-10 training job image.
#   docker build -t cifar10-job .                                     # CPU (tensorflow-cpu from the lock)
#   docker build --build-arg VARIANT=gpu -t cifar10-job:gpu .          # GPU: tensorflow[and-cuda], same versions
#   docker run --rm -v "$PWD/artifacts:/artifacts" cifar10-job train --out /artifacts --epochs 1
# Pin the base by digest in production: --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG BASE_IMAGE=python:3.11-slim-bookworm
# Build arguments, with their defaults said once here (infra/image/build.sh passes them all); a stage that uses
# one names it again, without a value.
ARG VARIANT=cpu VERSION=unknown REVISION=unknown CREATED=unknown

FROM ${BASE_IMAGE} AS build
ARG VARIANT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock requirements-serve.lock ./
# The GPU variant swaps the CPU wheel for the CUDA one at the same version; CUDA libraries come as
# pip wheels (nvidia-*), so the base image stays the same and only the host needs the NVIDIA driver.
# The serve variant (`--target serve`) installs the serving lock instead: ONNX Runtime, no TensorFlow.
RUN python3 -m venv /opt/venv \
 && if [ "$VARIANT" = gpu ]; then sed -i 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' requirements.lock; fi \
 && if [ "$VARIANT" = serve ]; then cp requirements-serve.lock requirements.lock; fi \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade "pip>=24" \
 && /opt/venv/bin/pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY job ./job
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && if [ "$VARIANT" = serve ]; then /opt/venv/bin/pip uninstall -q -y wheel setuptools pip \
      && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +; fi

# The serving image's whole root filesystem, assembled in /rootfs: the Python interpreter and its standard library
# (less tests, IDLE, tkinter, lib2to3, ensurepip, distutils, pydoc topics, sqlite3, dbm, curses, readline), the venv
# (less ONNX Runtime's quantization/transformers/tools, numpy's f2py/distutils, and botocore's API models other than
# S3's and the credential services': STS for web identity, SSO), the shared libraries all of them link (ldd), CA
# certificates, /etc/passwd with uid 10001, and `true` (the engine's start probe). No shell, apt, dpkg or perl.
FROM build AS serve-rootfs
# /bin/sh (no pipefail under podman's OCI format): a library the pipe misses fails the import check at the end.
# hadolint ignore=SC2016,DL4006
RUN set -eu; r=/rootfs; exe=$(readlink -f /opt/venv/bin/python); \
    std=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))'); \
    site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
    mkdir -p "$r/tmp" "$r/etc/ssl/certs" "$r/opt" "$r/$(dirname "$std")" "$r/$(dirname "$exe")" "$r/usr/bin"; \
    chmod 1777 "$r/tmp"; \
    cp -a /opt/venv "$r/opt/"; cp -a "$std" "$r/$std"; cp -a "$exe" "$r/$exe"; cp -a /usr/bin/true "$r/usr/bin/true"; \
    for v in python3 python; do if [ -e "$(dirname "$exe")/$v" ]; then ln -sf "$(basename "$exe")" "$r/$(dirname "$exe")/$v"; fi; done; \
    for d in test idlelib tkinter turtledemo lib2to3 ensurepip distutils pydoc_data sqlite3 dbm curses venv \
      site-packages dist-packages; do rm -rf "${r:?}$std/$d"; done; \
    for m in _test _xx xxlimited _ctypes_test _curses _dbm _gdbm _sqlite3 readline nis _tkinter ossaudiodev; do \
      rm -f "${r:?}$std/lib-dynload/$m"*; done; \
    for d in onnxruntime/quantization onnxruntime/transformers onnxruntime/tools numpy/f2py numpy/distutils; do \
      rm -rf "${r:?}$site/$d"; done; \
    find "$r$site/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 ! -name sts ! -name sso ! -name sso-oidc \
      -exec rm -rf {} +; \
    find "$r" -type f \( -name '*.so*' -o -perm -u+x \) -exec ldd {} \; 2>/dev/null \
      | awk '$2 == "=>" {print $3} $2 ~ /^\(0x/ {print $1}' | grep -E '^/(usr/)?(local/)?lib' | sort -u \
      | while read -r lib; do mkdir -p "$r/$(dirname "$lib")"; cp -L "$lib" "$r/$lib"; done; \
    if [ -d /etc/ld.so.conf.d ]; then cp -a /etc/ld.so.conf /etc/ld.so.conf.d "$r/etc/"; fi; ldconfig -r "$r"; \
    cp -L /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"; \
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\njob:x:10001:10001:job:/tmp:/usr/sbin/nologin\n' > "$r/etc/passwd"; \
    printf 'root:x:0:\njob:x:10001:\n' > "$r/etc/group"; \
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$r/etc/nsswitch.conf"; \
    PYTHONDONTWRITEBYTECODE=1 chroot "$r" /opt/venv/bin/python -c 'import job.serve.main, onnxruntime, numpy, PIL.Image, boto3, ssl'

# The model server (`make image-serve`): `docker build --target serve --build-arg VARIANT=serve`. No TensorFlow;
# non-root; the root filesystem can be read-only (only /tmp is written). The model is fetched and verified at
# start (an argument, AIP_STORAGE_URI, or SageMaker's /opt/ml/model), or mounted.
FROM scratch AS serve
ARG VERSION REVISION CREATED
LABEL org.opencontainers.image.title="cifar10-job-serve" \
      org.opencontainers.image.description="CIFAR-10 model server: ONNX Runtime, Open Inference Protocol v2, SageMaker and Vertex AI routes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.cifar10-job.variant="serve"
COPY --from=serve-rootfs /rootfs /
ENV PATH=/opt/venv/bin:/usr/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    CIFAR10_JOB_REVISION=${REVISION}
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "job"]
CMD ["serve"]

FROM ${BASE_IMAGE}
ARG VARIANT VERSION REVISION CREATED
LABEL org.opencontainers.image.title="cifar10-job" \
      org.opencontainers.image.description="CIFAR-10 Keras CNN training job: SavedModel + ONNX export, parity-verified, published to a folder or S3" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.cifar10-job.variant="${VARIANT}"
# A fixed, non-root uid/gid: Kubernetes securityContext (runAsUser 10001) and volume permissions rely on it.
# /var/hypertune: where Vertex AI hyperparameter tuning has cloudml-hypertune write each trial's metric.
RUN groupadd --gid 10001 job && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp job \
 && mkdir -p /artifacts /data /checkpoints /var/hypertune \
 && chown 10001:10001 /artifacts /data /checkpoints /var/hypertune
COPY --from=build /opt/venv /opt/venv
# Everything the job writes goes to /tmp or the mounted volumes: the root filesystem can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=2 \
    CIFAR10_JOB_REVISION=${REVISION} \
    JOB_OUT=/artifacts
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["python", "-m", "job"]
CMD ["train"]
