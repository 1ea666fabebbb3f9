"""Credentials of OpenAI-compatible endpoints: the one place that reads them.

A suite never holds a key. A `base_url` source (a candidate's or the
judge's) names where its key is: `api_key_env: VAR` (an environment
variable of the worker) or `api_key_file: /abs/path` (a mounted secret
file). `api_key()` reads it at use time, right before a request is made, and
nothing keeps it: it is not in the suite (or its digest), in XComs, in MLflow
params or tags, in reports, in logs, nor in any error message (errors name
the variable or the file, never the value). `check()` runs with suite
validation, so a missing variable or file fails before any work.
"""

from __future__ import annotations

import os
from pathlib import Path

from evaluation.errors import SuiteError


def api_key(source: dict, owner: str = "endpoint") -> str | None:
    """The key `source` names, or None when it names none. Raises SuiteError
    naming `owner` and the variable or file (never the value) when it is
    missing or empty."""
    var, file = source.get("api_key_env"), source.get("api_key_file")
    if var:
        value = os.environ.get(var, "").strip()
        if not value:
            raise SuiteError(f"{owner}: api_key_env: environment variable {var} is not set or empty")
        return value
    if file:
        path = Path(os.path.expandvars(file)).expanduser()
        try:
            value = path.read_text().strip()
        except OSError as e:
            raise SuiteError(f"{owner}: api_key_file: cannot read {path} ({e.strerror or type(e).__name__})") from None
        if not value:
            raise SuiteError(f"{owner}: api_key_file: {path} is empty")
        return value
    return None


def auth_headers(key: str | None) -> dict[str, str]:
    """HTTP headers that present `key` (none without one)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def check(suite) -> None:
    """Every key the suite names is there (validate time; see api_key)."""
    owners = [(f"candidates.{i} ({c.name})", c.source) for i, c in enumerate(suite.candidates)]
    if suite.judge is not None:
        owners.append((f"judge ({suite.judge.name})", suite.judge.source))
    path = suite.source_path or "suite"
    for owner, source in owners:
        try:
            api_key(source.model_dump(exclude_none=True), owner)
        except SuiteError as e:
            raise SuiteError(f"{path}: {e}") from None


def redact(text: str, key: str | None) -> str:
    """`text` with every occurrence of `key` replaced (for quoting a reply
    of a server that echoes what it was sent)."""
    return text.replace(key, "***") if key and text else text
