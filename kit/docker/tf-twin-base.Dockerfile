# kit twin base (kit base --stack twin): the Jetson's Python side on x86-64. The offline Debian base
# plus this host's Python 3.6 build (pyenv's 3.6.15, linked against bookworm's own libraries, which the
# Debian base carries for its python3) and a venv at /opt/kit/venv holding exactly the pinned packages of
# twin-requirements.txt (TensorFlow 2.3.1, numpy 1.16.1, protobuf 3.8.0) from wheels fetched on the host.
# No network is needed during the build (--no-index).
#
# Build context (assembled by kit/build/twin_base.py, never the repo root):
#   python/                 the Python 3.6 installation (no site-packages, no tests, no static library)
#   wheels/*.whl            every package of requirements.txt, for cp36 manylinux x86-64
#   wheels/requirements.txt twin-requirements.txt
#
# Two stages so the wheels never become a layer of the final image.
ARG DEBIAN_BASE=kit/debian-python:bookworm

FROM ${DEBIAN_BASE} AS install
ARG TENSORFLOW
ARG PIP_WHEEL
# Lets kit find and remove this stage's untagged image after the build.
LABEL kit.build.pipeline-stage="tf-twin-base-install-${TENSORFLOW}"
COPY python/ /opt/kit/python3.6/
COPY wheels/ /tmp/wheels/
# The interpreter was built for another prefix: its libpython is found through ld.so's cache, and it
# must import the stdlib modules that need system libraries before anything is installed with it.
# pip runs from its own wheel (ensurepip's 18.1 predates manylinux2010 and would refuse TensorFlow).
RUN test -n "${TENSORFLOW}" && test -n "${PIP_WHEEL}" \
 && echo /opt/kit/python3.6/lib > /etc/ld.so.conf.d/kit-python3.6.conf && ldconfig \
 && /opt/kit/python3.6/bin/python3.6 -c "import ssl, ctypes, zlib, bz2, lzma, sqlite3, hashlib, decimal, uuid, venv" \
 && /opt/kit/python3.6/bin/python3.6 -m venv --without-pip /opt/kit/venv \
 && /opt/kit/venv/bin/python "/tmp/wheels/${PIP_WHEEL}/pip" install --no-index --no-deps --no-cache-dir \
      --disable-pip-version-check --no-warn-script-location --find-links /tmp/wheels \
      -r /tmp/wheels/requirements.txt \
 && TF_CPP_MIN_LOG_LEVEL=3 /opt/kit/venv/bin/python -c "import tensorflow, numpy, google.protobuf"

FROM ${DEBIAN_BASE}
ARG TENSORFLOW
ARG PYTHON
ARG DEBIAN_BASE
COPY --from=install /etc/ld.so.conf.d/kit-python3.6.conf /etc/ld.so.conf.d/kit-python3.6.conf
COPY --from=install /opt/kit/python3.6 /opt/kit/python3.6
COPY --from=install /opt/kit/venv /opt/kit/venv
RUN ldconfig
# python3 on PATH is the twin's 3.6 (the venv's): Debian's own /usr/bin/python3 (3.11) stays for the
# system, kit never runs it.
ENV VIRTUAL_ENV=/opt/kit/venv \
    PATH=/opt/kit/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=1
LABEL kit.stack=twin \
      kit.tensorflow="${TENSORFLOW}" \
      kit.python="${PYTHON}" \
      org.opencontainers.image.title="kit twin base (JetPack 4.4.1's Python side, x86-64)" \
      org.opencontainers.image.description="Debian bookworm, Python ${PYTHON}, tensorflow-cpu ${TENSORFLOW} and the pins of kit's twin-requirements.txt in /opt/kit/venv; no CUDA, no TensorRT" \
      org.opencontainers.image.version="${TENSORFLOW}" \
      org.opencontainers.image.base.name="${DEBIAN_BASE}" \
      org.opencontainers.image.licenses="Apache-2.0"
CMD ["python"]
