"""tests/runtime runs twice: on the host's Python/TF and on the twin (Python 3.6 + TF 2.3.1, .venv-twin).
So its files may import only what the images have: kit.runtime, the standard library, numpy, TensorFlow,
pytest, and the shared test helpers (models, trt_fixtures)."""

import ast
import os

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ALLOWED_ROOTS = {"numpy", "tensorflow", "pytest", "models", "trt_fixtures", "lazy_tf",
                 # the standard library modules these tests use (3.6 has no sys.stdlib_module_names)
                 "ast", "base64", "collections", "contextlib", "gzip", "zlib", "http", "inspect", "io", "json", "os", "re", "shutil", "signal",
                 "socket", "struct", "subprocess", "sys", "tempfile", "textwrap", "threading", "time", "pathlib"}


def imported(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def bad_imports(path):
    out = []
    for name in imported(path):
        if name == "kit.runtime" or name.startswith("kit.runtime."):
            continue
        if name.split(".")[0] not in ALLOWED_ROOTS:
            out.append(name)
    return out


def test_runtime_tests_import_only_what_the_images_have():
    files = [os.path.join(HERE, f) for f in sorted(os.listdir(HERE)) if f.endswith(".py")]
    files += [os.path.join(TESTS, f) for f in ("conftest.py", "models.py", "trt_fixtures.py", "lazy_tf.py")]
    problems = dict((p, bad_imports(p)) for p in files)
    assert not dict((p, b) for p, b in problems.items() if b)


def test_the_rule_catches_a_host_import(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("import typer\nfrom kit.manifest import load\nfrom kit.runtime import audit\nimport json\n")
    assert bad_imports(str(bad)) == ["typer", "kit.manifest"]
