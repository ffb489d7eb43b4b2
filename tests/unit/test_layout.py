"""The shape of the kit package (docs/architecture.md), measured with ast by testkit/layout.py:
no private name taken across modules, no function over 100 lines, no class over 300, pyflakes clean."""

from __future__ import annotations

from pathlib import Path

import pyflakes.api
import pyflakes.reporter

from testkit import layout

REPO = layout.ROOT


def test_no_module_takes_a_private_name_from_another():
    """kit/, and the tests, testkit/ and bench/ that use it, reach other modules only through public names."""
    found = [str(u) for d in ("kit", "tests", "testkit", "bench") for p in layout.python_files(REPO / d)
             for u in layout.private_uses(p)]
    assert found == []


def test_the_private_name_rule_catches_both_forms_and_spares_a_modules_own_names(tmp_path):
    other = tmp_path / "user.py"
    other.write_text("from kit.fleet.rollout import _secret, plan_waves\n"
                     "from kit.runtime import model\n"
                     "import kit.docker_api as dapi\n"
                     "x = model._tf, model.__doc__, dapi._daemon_message\n")
    assert [(u.owner, u.name, u.line) for u in layout.private_uses(other)] == [
        ("kit.fleet.rollout", "_secret", 1), ("kit.runtime.model", "_tf", 4), ("kit.docker_api", "_daemon_message", 4)]
    # In a tree of its own: a module naming its own private names is fine, another's is not.
    (tmp_path / "kit").mkdir()
    for name in ("__init__", "b"):
        (tmp_path / "kit" / f"{name}.py").write_text("")
    (tmp_path / "kit" / "a.py").write_text("from kit.a import _mine\nfrom kit.b import _theirs\n")
    assert [(u.owner, u.name) for u in layout.private_uses(tmp_path / "kit" / "a.py", root=tmp_path)] == [
        ("kit.b", "_theirs")]


def test_no_function_over_100_lines():
    found = layout.spans(layout.python_files(REPO / "kit"))
    assert [str(s) for s in layout.over_limits(found) if s.kind == "function"] == []


def test_no_class_over_300_lines():
    found = layout.spans(layout.python_files(REPO / "kit"))
    assert [str(s) for s in layout.over_limits(found) if s.kind == "class"] == []


def test_the_size_measure_counts_a_definitions_own_lines(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("class A:\n    def f(self):\n        def g():\n            return 1\n        return g\n\n\n"
                   "def h():\n" + "    x = 1\n" * 101 + "\n\nclass B:\n" + "    y = 1\n" * 299 +
                   "\n\nclass C:\n" + "    z = 1\n" * 300)
    spans = {s.qualname: s.lines for s in layout.spans([src])}
    assert spans == {"A": 5, "A.f": 4, "A.f.g": 2, "h": 102, "B": 300, "C": 301}
    assert [s.qualname for s in layout.over_limits(layout.spans([src]))] == ["C", "h"]  # largest first


def test_kit_is_pyflakes_clean():
    out, err = _Collect(), _Collect()
    count = pyflakes.api.checkRecursive([str(REPO / "kit")], pyflakes.reporter.Reporter(out, err))
    assert (count, out.text, err.text) == (0, "", "")


def test_the_figures_name_the_modules_and_the_largest_definitions():
    text = layout.report()
    assert f"top-level modules in kit/: {len(list((REPO / 'kit').glob('*.py')))}" in text
    largest = layout.largest(layout.spans(layout.python_files(REPO / "kit")), "function")
    assert f"largest function: {largest.qualname} ({largest.path}:{largest.line}), {largest.lines} lines" in text
    assert Path(REPO / largest.path).is_file()


class _Collect:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass
