# kit runtime image: the pinned base, kit/runtime, and the optimized model as
# the LAST layer. Everything above the model layer is the same for every model
# built on the same base with the same kit, so a model-only change rebuilds and
# pushes one layer. Per-model values (serve settings, fingerprint labels) are
# config, not filesystem layers: serve settings come in as build args used
# only below the kit layer, labels come in as build labels.
#
# The build context is a small directory kit assembles (never the repo root):
#   kit/__init__.py, kit/runtime/**   the in-image half of kit
#   pylib/                            unpacked wheels it needs (tornado), from kit/build/wheels.py
#   warmup/                           serve.warmup samples (empty when there are none)
#   model/                            the optimized SavedModel (optimizer output)
ARG BASE_IMAGE=nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3
FROM ${BASE_IMAGE}

ENV PYTHONPATH=/opt/kit/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY pylib/ /opt/kit/lib/
COPY kit/ /opt/kit/lib/kit/

# Serve settings from the manifest's serve section (defaults match kit's).
ARG KIT_MODEL_NAME=model
ARG KIT_MODEL_VERSION=1
ARG KIT_SIGNATURE=serving_default
ARG KIT_PORT=8501
ARG KIT_GRPC_PORT=8500
ARG KIT_BATCH_SIZES=1
ARG KIT_MAX_BATCH_DELAY=2ms
ARG KIT_MAX_QUEUE=64
ARG KIT_WARMUP=1
ARG KIT_WARMUP_SAMPLES=
ARG KIT_MAX_CONNECTIONS=2048
ARG KIT_MAX_HEADER_BYTES=65536
ARG KIT_MAX_HEADERS=100
ARG KIT_MAX_JSON_BODY=16777216
ARG KIT_MAX_BODY=67108864
ARG KIT_MAX_BUFFERED=268435456
ARG KIT_IDLE_TIMEOUT=20000ms
ARG KIT_BODY_TIMEOUT=60000ms
# TF_CPP_VMODULE: TF 2.3.1 logs "Building a new TensorRT engine" (an engine built at run time, ~30 min on a
# Nano) only at VLOG(1) of trt_engine_op; the server counts those lines (kit_trt_engine_builds_total).
# TF_CPP_MIN_LOG_LEVEL=0: TensorFlow drops VLOG lines below that level like INFO ones (kit's CPU bases set 1).
# TF_GPU_ALLOCATOR stays unset: TensorFlow's BFC allocator, sized by the memory limit, stays in charge.
ENV TF_CPP_VMODULE=trt_engine_op=1 \
    TF_CPP_MIN_LOG_LEVEL=0 \
    KIT_MODEL_DIR=/opt/kit/model \
    KIT_MODEL_NAME=${KIT_MODEL_NAME} \
    KIT_MODEL_VERSION=${KIT_MODEL_VERSION} \
    KIT_SIGNATURE=${KIT_SIGNATURE} \
    KIT_HOST=0.0.0.0 \
    KIT_PORT=${KIT_PORT} \
    KIT_GRPC_PORT=${KIT_GRPC_PORT} \
    KIT_BATCH_SIZES=${KIT_BATCH_SIZES} \
    KIT_MAX_BATCH_DELAY=${KIT_MAX_BATCH_DELAY} \
    KIT_MAX_QUEUE=${KIT_MAX_QUEUE} \
    KIT_WARMUP=${KIT_WARMUP} \
    KIT_WARMUP_SAMPLES=${KIT_WARMUP_SAMPLES} \
    KIT_MAX_CONNECTIONS=${KIT_MAX_CONNECTIONS} \
    KIT_MAX_HEADER_BYTES=${KIT_MAX_HEADER_BYTES} \
    KIT_MAX_HEADERS=${KIT_MAX_HEADERS} \
    KIT_MAX_JSON_BODY=${KIT_MAX_JSON_BODY} \
    KIT_MAX_BODY=${KIT_MAX_BODY} \
    KIT_MAX_BUFFERED=${KIT_MAX_BUFFERED} \
    KIT_IDLE_TIMEOUT=${KIT_IDLE_TIMEOUT} \
    KIT_BODY_TIMEOUT=${KIT_BODY_TIMEOUT}
EXPOSE ${KIT_PORT} ${KIT_GRPC_PORT}

# A numeric user needs no useradd; the model files are owned by it. Group 44
# is "video" on Ubuntu (L4T) and Debian alike: on a Jetson the GPU device
# nodes the nvidia runtime passes in are root:video 0660, so a non-root
# process without that group sees no GPU.
USER 10001:44
WORKDIR /tmp

# The server's own readiness probe (GET /v2/health/ready; Python stdlib, no
# TF import, no curl in the image). Long start period: loading TF and
# deserializing engines takes minutes on a Nano.
HEALTHCHECK --interval=5s --timeout=10s --start-period=300s --retries=3 \
  CMD ["python3", "-m", "kit.runtime.serving.healthcheck"]
CMD ["python3", "-m", "kit.runtime.serving.main"]

# serve.warmup samples, if the manifest names any (else an empty directory).
COPY --chown=10001:44 warmup/ /opt/kit/warmup/
COPY --chown=10001:44 model/ /opt/kit/model/
