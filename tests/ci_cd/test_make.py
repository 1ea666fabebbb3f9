"""`make test` (what .ci/run calls) fails when pytest collects no test: a
selection that matches nothing must not pass CI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_fails_when_no_test_is_collected():
    # -o install: use the environments as they are (never install from a test).
    out = subprocess.run(
        ["make", "-o", "install", "test", f"PYTEST_ARGS={__file__} -k no_test_has_this_name -p no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0, out.stdout + out.stderr
    assert "no tests ran" in out.stdout or "deselected" in out.stdout, out.stdout


def test_ci_entry_point_runs_make_test():
    script = (REPO / ".ci" / "run").read_text()
    assert "make test" in script and "exit $rc" in script
