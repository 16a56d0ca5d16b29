# syntax=docker/dockerfile:1
# CIFAR-10 training job image.
#   docker build -t cifar10-job .                                     # CPU (tensorflow-cpu from the lock)
#   docker build --build-arg VARIANT=gpu -t cifar10-job:gpu .          # GPU: tensorflow[and-cuda], same versions
#   docker run --rm -v "$PWD/artifacts:/artifacts" cifar10-job train --out /artifacts --epochs 1
# Pin the base by digest in production: --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG VARIANT=cpu
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

# The model server (`make image-serve`): `docker build --target serve --build-arg VARIANT=serve`. No TensorFlow;
# non-root; the root filesystem can be read-only (only /tmp is written). The model is fetched and verified at
# start (an argument, AIP_STORAGE_URI, or SageMaker's /opt/ml/model), or mounted.
FROM ${BASE_IMAGE} AS serve
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="cifar10-job-serve" \
      org.opencontainers.image.description="CIFAR-10 model server: ONNX Runtime, Open Inference Protocol v2, SageMaker and Vertex AI routes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.cifar10-job.variant="serve"
RUN groupadd --gid 10001 job && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp job
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
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
ARG VARIANT=cpu
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
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
