"""Where a DAG run may read its suite from (evaluation.settings.resolve_suite):
only under the bundled suites/ and the directories of LLMOPS_SUITES_PATH."""

from __future__ import annotations

import os

import pytest

from evaluation import settings
from evaluation.errors import SuiteError


@pytest.fixture
def roots(tmp_path, monkeypatch):
    a, b = tmp_path / "team-a", tmp_path / "team-b"
    for d in (a, b):
        d.mkdir()
        (d / "suite.yaml").write_text("name: x\n")
    (tmp_path / "outside.yaml").write_text("name: outside\n")
    monkeypatch.setenv("LLMOPS_SUITES_PATH", f"{a}{os.pathsep}{b}")
    return tmp_path


def test_bundled_suite_by_absolute_path_and_by_name(monkeypatch):
    monkeypatch.delenv("LLMOPS_SUITES_PATH", raising=False)
    bundled = str(settings.BUNDLED_SUITE.resolve())
    assert settings.resolve_suite(bundled) == bundled
    assert settings.resolve_suite("default.yaml") == bundled


def test_suites_under_configured_roots(roots):
    path = roots / "team-b" / "suite.yaml"
    assert settings.resolve_suite(str(path)) == str(path.resolve())
    # A relative name is looked up in each root in order.
    assert settings.resolve_suite("suite.yaml") == str((roots / "team-a" / "suite.yaml").resolve())


def test_outside_the_roots_is_refused_naming_the_roots(roots):
    with pytest.raises(SuiteError) as exc:
        settings.resolve_suite(str(roots / "outside.yaml"))
    msg = str(exc.value)
    assert "outside the suite roots" in msg
    assert str(settings.SUITES_DIR.resolve()) in msg and str(roots / "team-a") in msg
    assert "LLMOPS_SUITES_PATH" in msg


@pytest.mark.parametrize(
    "param", ["../outside.yaml", "{root}/team-a/../outside.yaml", "{root}/team-a/../team-b/suite.yaml"]
)
def test_dot_dot_is_refused(roots, param):
    with pytest.raises(SuiteError, match=r"'\.\.' is not allowed"):
        settings.resolve_suite(param.format(root=roots))


def test_a_symlink_out_of_a_root_is_refused(roots):
    link = roots / "team-a" / "sneaky.yaml"
    link.symlink_to(roots / "outside.yaml")
    with pytest.raises(SuiteError, match="outside the suite roots"):
        settings.resolve_suite(str(link))
    with pytest.raises(SuiteError, match="outside the suite roots"):
        settings.resolve_suite("sneaky.yaml")


def test_a_symlinked_root_is_followed(roots, monkeypatch):
    alias = roots / "alias"
    alias.symlink_to(roots / "team-a")
    monkeypatch.setenv("LLMOPS_SUITES_PATH", str(alias))
    assert settings.resolve_suite(str(alias / "suite.yaml")) == str((roots / "team-a" / "suite.yaml").resolve())


@pytest.mark.parametrize("param", ["", "   ", "missing.yaml", "/{root}/team-a/missing.yaml"])
def test_missing_or_empty(roots, param):
    with pytest.raises(SuiteError, match="suite roots"):
        settings.resolve_suite(param.format(root=roots))


def test_default_roots_are_the_bundled_suites_only(monkeypatch, tmp_path):
    monkeypatch.delenv("LLMOPS_SUITES_PATH", raising=False)
    assert settings.suite_roots() == [settings.SUITES_DIR.resolve()]
    assert not settings.under_roots(tmp_path / "x.yaml")
    assert settings.under_roots(settings.BUNDLED_SUITE)
