"""Credentials of OpenAI-compatible endpoints: the one place that reads them.

A suite never holds a key. A `base_url` source (a candidate's or the
judge's) names where its key is: `api_key_env: VAR` (an environment
variable of the worker) or `api_key_file: /abs/path` (a mounted secret
file). `api_key()` reads it at use time, right before a request is made, and
nothing stores it (only the process's memory holds it): it is not in the
suite (or its digest), in XComs, in MLflow params or tags, in reports, in
logs, nor in any error message (errors name the variable or the file, never
the value). `check()` runs with suite
validation, so a missing variable or file fails before any work.

Servers may echo a key back (a 401 body quoting the Authorization header),
and libraries log and raise what they got. `redact()` takes a key out of
text quoted from a server. `protect(key)` (the judge scorers call it with the
judge's key) makes that for good in this process: `redact()` removes it from
any text, and a log record factory removes it from every log record (litellm,
openai, httpx, instructor, ragas, trulens and their child loggers log judge
errors, retries and tracebacks), whatever logger or handler emits it.
"""

from __future__ import annotations

import logging
import os
import threading
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


REDACTED = "***"
_protected: frozenset[str] = frozenset()  # keys redacted everywhere (protect)
_lock = threading.Lock()


def redact(text: str, key: str | None = None) -> str:
    """`text` with every occurrence of `key`, and of every key `protect()`
    was given, replaced by ***. Redact before truncating: a cut key no longer
    matches."""
    if not text:
        return text
    for k in sorted({key, *_protected} - {None, ""}, key=len, reverse=True):
        text = text.replace(k, REDACTED)
    return text


def protect(key: str | None) -> None:
    """Redact `key` from every log record and every `redact()` from now on,
    in this process (the first call installs the log record factory)."""
    global _protected
    if not key or key in _protected:
        return
    with _lock:
        if not _protected:
            logging.setLogRecordFactory(_scrubbing(logging.getLogRecordFactory()))
        _protected = _protected | {key}


def _scrubbing(make_record):
    """A log record factory: `make_record`'s record, with protected keys
    taken out of its message and its traceback text."""

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 -- a broken format: logging reports it at emit time
            return record
        if (clean := redact(msg)) != msg:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if (clean := redact(text)) != text:
                # Formatters print exc_text; without exc_info none re-formats it.
                record.exc_text, record.exc_info = clean, None
        return record

    return factory
