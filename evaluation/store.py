"""Artifact store: a local directory or a gs://bucket/prefix.

Two write modes: `put` (atomic replace) and `put_new` (create-only: fails
with AlreadyExists if the key exists). Create-only is what makes the
promotion ledger append-only and race-free: locally it is a hard link of a
fully written temp file (atomic, never a partial entry); on GCS it is an
upload with `if_generation_match=0`. (The local GCS emulator does not enforce
generation preconditions; the concurrency tests use the local store.)
`is_transient` tells a store fault worth retrying (connection errors,
timeouts, HTTP 429/5xx) from a permanent one (permissions, bad paths).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class AlreadyExists(Exception):
    pass


def is_transient(exc: BaseException) -> bool:
    """A connection error, a timeout or a GCS 429/5xx: retrying may help."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests
        from google.api_core import exceptions as gexc
    except ImportError:  # pragma: no cover - both come with google-cloud-storage
        return False
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, gexc.TooManyRequests, gexc.ServerError))


class LocalStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _tmp(self, p: Path, data: bytes) -> str:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def put(self, key: str, data: bytes) -> None:
        p = self._path(key)
        tmp = self._tmp(p, data)
        os.replace(tmp, p)

    def put_new(self, key: str, data: bytes) -> None:
        p = self._path(key)
        tmp = self._tmp(p, data)
        try:
            os.link(tmp, p)
        except FileExistsError:
            raise AlreadyExists(key) from None
        finally:
            os.unlink(tmp)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))


class GCSStore:
    def __init__(self, uri: str):
        from google.cloud import storage

        rest = uri.removeprefix("gs://")
        bucket, _, prefix = rest.partition("/")
        self.uri = uri
        self.prefix = prefix.strip("/")
        if os.environ.get("STORAGE_EMULATOR_HOST"):  # local emulator: no credentials
            from google.auth.credentials import AnonymousCredentials

            self.client = storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"),
                                         credentials=AnonymousCredentials())  # fmt: skip
        else:
            self.client = storage.Client()
        self.bucket = self.client.bucket(bucket)

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.bucket.blob(self._name(key)).upload_from_string(data)

    def put_new(self, key: str, data: bytes) -> None:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.bucket.blob(self._name(key)).upload_from_string(data, if_generation_match=0)
        except PreconditionFailed:
            raise AlreadyExists(key) from None

    def get(self, key: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._name(key)).download_as_bytes()
        except NotFound:
            return None

    def list(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(b.name[strip:] for b in self.client.list_blobs(self.bucket, prefix=self._name(prefix)))


def open_store(uri: str | os.PathLike):
    uri = str(uri)
    if uri.startswith("gs://"):
        return GCSStore(uri)
    return LocalStore(uri.removeprefix("file://"))
