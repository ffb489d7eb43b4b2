"""kit/runtime (and kit/__init__.py) run inside L4T images on Python 3.6: vermin checks every file."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_runtime_is_python36_compatible():
    vermin = Path(sys.executable).parent / "vermin"
    assert vermin.is_file(), f"vermin is a test dependency (pip install -e '.[test]'); not found at {vermin}"
    proc = subprocess.run([str(vermin), "-q", "--violations", "-t=3.6-", "kit/runtime", "kit/__init__.py"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, "Python 3.7+ features in kit/runtime:\n" + proc.stdout + proc.stderr


def test_vermin_catches_a_violation(tmp_path):
    """The check above can fail: a 3.8 walrus and a 3.7 stdlib call are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import subprocess\nif (n := 1):\n    subprocess.run(['true'], capture_output=True)\n")
    vermin = Path(sys.executable).parent / "vermin"
    proc = subprocess.run([str(vermin), "-q", "--violations", "-t=3.6-", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "3.8" in proc.stdout
