# kit TensorFlow CPU base: the offline-assembled Debian base (kit base) plus a
# venv at /opt/kit/venv holding TensorFlow from wheels that `pip download`
# fetched on the host. No network is needed during the build (--no-index).
#
# Build context (assembled by kit/build/base.py, never the repo root):
#   wheels/*.whl   tensorflow-cpu==${TENSORFLOW}, numpy and every dependency
#
# Two stages so the wheels never become a layer of the final image: the first
# installs them, the second copies only the finished venv.
ARG DEBIAN_BASE=kit/debian-python:bookworm

FROM ${DEBIAN_BASE} AS install
ARG TENSORFLOW
# Lets kit find and remove this stage's untagged image after the build.
LABEL kit.build.pipeline-stage="tf-cpu-base-install-${TENSORFLOW}"
COPY wheels/ /tmp/wheels/
RUN test -n "${TENSORFLOW}" \
 && python3 -m venv /opt/kit/venv \
 && /opt/kit/venv/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
      --find-links /tmp/wheels "tensorflow-cpu==${TENSORFLOW}" numpy \
 && /opt/kit/venv/bin/python -c "import tensorflow, numpy"

FROM ${DEBIAN_BASE}
ARG TENSORFLOW
ARG PYTHON=3.11
ARG DEBIAN_BASE
COPY --from=install /opt/kit/venv /opt/kit/venv
ENV VIRTUAL_ENV=/opt/kit/venv \
    PATH=/opt/kit/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=1
LABEL kit.stack=cpu \
      kit.tensorflow="${TENSORFLOW}" \
      kit.python="${PYTHON}" \
      org.opencontainers.image.title="kit TensorFlow CPU base" \
      org.opencontainers.image.description="Debian bookworm, Python ${PYTHON}, tensorflow-cpu in /opt/kit/venv" \
      org.opencontainers.image.version="${TENSORFLOW}" \
      org.opencontainers.image.base.name="${DEBIAN_BASE}" \
      org.opencontainers.image.licenses="Apache-2.0"
CMD ["python"]
