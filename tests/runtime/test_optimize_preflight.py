"""kit.runtime.preflight: memory rule, the TensorRT probe subprocess, versions."""

import textwrap

import pytest

from kit.runtime import preflight

GiB = 1 << 30


def test_meminfo_parsing(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:        4051060 kB\nMemFree:          123456 kB\nMemAvailable:    2500000 kB\n"
                 "HugePages_Total:       0\n")
    info = preflight.read_meminfo(str(f))
    assert info["MemTotal"] == 4051060 * 1024 and info["MemAvailable"] == 2500000 * 1024
    assert info["HugePages_Total"] == 0
    assert preflight.memory_available(info) == (2500000 * 1024, "MemAvailable")
    assert preflight.memory_available({"MemFree": 10, "Cached": 5}) == (15, "MemFree+Cached")
    assert preflight.read_meminfo(str(tmp_path / "absent")) == {}
    assert preflight.read_meminfo()["MemTotal"] > 0  # the real one


def test_memory_rule_the_article_failure():
    # The article: 4 GiB workspace under a 2 GiB memory limit on a 4 GB Nano.
    checks = preflight.memory_rule(4 * GiB, 2 * GiB, {"MemAvailable": int(3.2 * GiB)})
    by = {c["name"]: c for c in checks}
    assert not by["workspace_below_memory_limit"]["ok"]
    assert by["workspace_below_memory_limit"]["detail"] == "max_workspace_size 4 GiB >= memory_limit 2 GiB"
    assert "max_workspace_size" in by["workspace_below_memory_limit"]["hint"]
    assert by["memory_limit_below_available"]["ok"]


def test_memory_rule_limit_above_available_memory():
    checks = preflight.memory_rule(1 * GiB, 2 * GiB, {"MemAvailable": int(1.5 * GiB)})
    bad = [c for c in checks if not c["ok"]]
    assert [c["name"] for c in bad] == ["memory_limit_below_available"]
    assert "1.50 GiB" in bad[0]["detail"] and "shares this RAM" in bad[0]["hint"]
    assert all(c["ok"] for c in preflight.memory_rule(1 * GiB, 2 * GiB, {"MemAvailable": 3 * GiB}))
    assert all(c["ok"] for c in preflight.memory_rule(1 * GiB, 2 * GiB, {}))  # unknown: not checked


@pytest.mark.tf
def test_real_probe_here_says_tensorrt_is_absent_and_what_was_asked():
    probe = preflight.probe_tensorrt(timeout=300)
    assert probe["available"] is False and probe["enabled"] is False
    assert probe["module"] == "tensorflow.compiler.tf2tensorrt._pywrap_py_utils"
    assert probe["returncode"] == 0 and probe["signal"] is None
    assert probe["linked"] is None and probe["loaded"] is None
    assert "is_tensorrt_enabled() -> False" in probe["summary"]
    assert "get_loaded_tensorrt_version() -> (0, 0, 0)" in probe["summary"]
    assert probe["tensorflow"].startswith("2.")
    message = preflight.tensorrt_unavailable_message(probe)
    assert message.startswith("TensorRT is not available ")


def test_probe_survives_a_child_that_aborts():
    """A TensorFlow without libnvinfer can abort() inside get_loaded_tensorrt_version: a real abort here."""
    code = textwrap.dedent("""
        import json, os, sys
        def emit(**kw):
            sys.stdout.write(json.dumps(kw) + "\\n"); sys.stdout.flush()
        emit(step="imported", module="tensorflow.compiler.tf2tensorrt._pywrap_py_utils")
        emit(step="call", function="is_tensorrt_enabled")
        emit(step="result", function="is_tensorrt_enabled", value=True)
        emit(step="call", function="get_linked_tensorrt_version")
        emit(step="result", function="get_linked_tensorrt_version", value=[7, 1, 3])
        emit(step="call", function="get_loaded_tensorrt_version")
        sys.stderr.write("getInferLibVersion symbol not found\\n"); sys.stderr.flush()
        os.abort()
    """)
    probe = preflight.probe_tensorrt(code=code, timeout=60)
    assert probe["available"] is False
    assert probe["signal"] == "SIGABRT"
    assert probe["enabled"] is True and probe["linked"] == "7.1.3" and probe["loaded"] is None
    assert "killed by SIGABRT while calling get_loaded_tensorrt_version()" in probe["summary"]
    assert "getInferLibVersion symbol not found" in probe["summary"]


def test_probe_of_an_older_module_without_is_tensorrt_enabled():
    code = textwrap.dedent("""
        import json, sys
        for kw in ({"step": "imported", "module": "tensorflow.compiler.tf2tensorrt.wrap_py_utils"},
                   {"step": "missing", "function": "is_tensorrt_enabled"},
                   {"step": "result", "function": "get_linked_tensorrt_version", "value": [7, 1, 3]},
                   {"step": "result", "function": "get_loaded_tensorrt_version", "value": [7, 1, 3]}):
            print(json.dumps(kw))
    """)
    probe = preflight.probe_tensorrt(code=code, timeout=60)
    assert probe["available"] is True and probe["enabled"] is True and probe["loaded"] == "7.1.3"
    assert probe["module"] == "tensorflow.compiler.tf2tensorrt.wrap_py_utils"


def test_probe_with_a_missing_interpreter():
    probe = preflight.probe_tensorrt(python="/nonexistent/python3")
    assert probe["available"] is False and probe["summary"].startswith("could not start /nonexistent/python3")


def test_versions_against_the_pinned_stack(tmp_path):
    stack = {"name": "4.4.1", "l4t": "32.4.4", "tensorflow": "2.3.1", "tensorrt": "7.1.3"}
    ok = preflight.version_checks(stack, {"tensorflow": "2.3.1+nv20.12", "tensorrt": "7.1.3", "l4t": "32.4.4"}, True)
    assert all(c["ok"] for c in ok) and len(ok) == 3
    bad = preflight.version_checks(stack, {"tensorflow": "2.17.1", "tensorrt": "8.2.1", "l4t": "32.6.1"}, True)
    assert [c["name"] for c in bad if not c["ok"]] == ["tensorflow_version", "tensorrt_version", "l4t_version"]
    # TensorRT not checked when it is not used (native); L4T not checked when unknown.
    assert [c["name"] for c in preflight.version_checks(stack, {"tensorflow": "2.3.1"}, False)] == ["tensorflow_version"]
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R32 (release), REVISION: 4.4, GCID: 23942405, BOARD: t210ref, EABI: aarch64, DATE: Fri Oct 16\n")
    assert preflight.read_l4t_release(str(release)) == "32.4.4"
    assert preflight.read_l4t_release(str(tmp_path / "absent")) is None
    assert preflight.release("2.3.1+nv20.12") == "2.3.1" and preflight.release(None) is None
