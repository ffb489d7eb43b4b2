# kit builder image: the pinned base (TensorFlow, and on Jetson the TF-TRT
# stack the nvidia runtime mounts from the host) plus kit/runtime. kit runs
# the optimizer in it: docker run --runtime nvidia ... python3 -m kit.runtime.optimize
#
# The build context is a small directory kit assembles (never the repo root):
#   kit/__init__.py, kit/runtime/**   the in-image half of kit
#   pylib/                            unpacked wheels it needs (tornado), from kit/build/wheels.py (Python 3.6+)
ARG BASE_IMAGE=nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3
FROM ${BASE_IMAGE}

# Nothing here varies between builds: the same base and the same kit code give
# the same layer, which the runtime image shares.
ENV PYTHONPATH=/opt/kit/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY pylib/ /opt/kit/lib/
COPY kit/ /opt/kit/lib/kit/
WORKDIR /tmp

# kit passes the whole command (optimize --spec, or the smoke reference run).
CMD ["python3", "-m", "kit.runtime.optimize", "--help"]
