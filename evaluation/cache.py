"""Content-addressed result cache.

An entry's key is the hash of everything that changes the result (model
identity, engine, sampling parameters, prompt template, example content, ...),
so a retried or re-run task finds what is already done and redoes nothing
else. Writes are atomic (temp file + rename in the same directory): a task
killed mid-write leaves no partial entry.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from evaluation.keys import cache_key  # noqa: F401 - re-exported for callers of the cache


class ResultCache:
    """A local directory, or gs://bucket/prefix (each object upload is atomic
    on GCS, so the same no-partial-entry guarantee holds there)."""

    def __init__(self, root: str | os.PathLike):
        self.gcs = None
        if str(root).startswith("gs://"):
            from evaluation.store import GCSStore

            self.gcs = GCSStore(str(root))
        self.root = Path(str(root).removeprefix("file://"))

    def _name(self, namespace: str, key: str) -> str:
        return f"{namespace}/{key[:2]}/{key}.json"

    def _path(self, namespace: str, key: str) -> Path:
        return self.root / self._name(namespace, key)

    def get(self, namespace: str, key: str) -> dict | None:
        if self.gcs is not None:
            data = self.gcs.get(self._name(namespace, key))
            try:
                return None if data is None else json.loads(data)
            except json.JSONDecodeError:
                return None
        p = self._path(namespace, key)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # cannot happen with atomic writes; treat as a miss
            return None

    def put(self, namespace: str, key: str, value: dict) -> None:
        if self.gcs is not None:
            self.gcs.put(self._name(namespace, key), json.dumps(value).encode())
            return
        p = self._path(namespace, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(value, f)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __contains__(self, item: tuple[str, str]) -> bool:
        if self.gcs is not None:
            return self.gcs.get(self._name(*item)) is not None
        return self._path(*item).is_file()
