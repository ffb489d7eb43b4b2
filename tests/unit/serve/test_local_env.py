"""The environment `kit serve --local` gives its server: engine builds at run time must be logged there as
in the runtime image (TF 2.3.1: VLOG(1) of trt_engine_op, only at TF_CPP_MIN_LOG_LEVEL 0)."""

from __future__ import annotations

from kit.runtime.logtap import ENGINE_BUILD_VMODULE, engine_build_vmodule
from kit.serve.local import runtime_env


def test_vmodule_gains_trt_engine_op_and_keeps_the_users_modules():
    assert ENGINE_BUILD_VMODULE == "trt_engine_op=1"
    assert engine_build_vmodule(None) == "trt_engine_op=1"
    assert engine_build_vmodule("") == "trt_engine_op=1"
    assert engine_build_vmodule("segment=2") == "segment=2,trt_engine_op=1"
    assert engine_build_vmodule("trt_engine_op=2,segment=2") == "trt_engine_op=2,segment=2"  # higher level kept
    assert engine_build_vmodule("trt_engine_op=0, x=1") == "x=1,trt_engine_op=1"  # 0 would hide the builds


def test_runtime_env_sets_the_vmodule_and_level(monkeypatch):
    monkeypatch.delenv("TF_CPP_VMODULE", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    env = runtime_env()
    assert env["TF_CPP_VMODULE"] == "trt_engine_op=1" and env["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")  # the user's level is kept (serve_local warns about it)
    monkeypatch.setenv("TF_CPP_VMODULE", "convert_graph=2")
    env = runtime_env()
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2" and env["TF_CPP_VMODULE"] == "convert_graph=2,trt_engine_op=1"
