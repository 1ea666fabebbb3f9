"""Append-only promotion ledger in the artifact store.

Every alias move of `champion` (promotion or rollback) is an entry
`ledger/<registered model>/<seq>.json`, written create-only *before* the
alias moves. Two promotions that read the same ledger head race for the same
sequence number: exactly one write succeeds, the other aborts without
touching the registry. Entries record what, when, why, the previous
version, the evidence, the DAG run and the git commit.

A write whose response is lost (a connection error after the object
landed; google-cloud-storage also retries such an upload by itself) is
retried with backoff until a deadline. Each append carries a random
`token`, so a retry that finds the entry already there reads it back and
recognises its own write instead of reporting a race.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import uuid
from dataclasses import asdict, dataclass, field

import tenacity

from evaluation.errors import RegistryError, TransientError
from evaluation.jsonsafe import dump_nan
from evaluation.store import AlreadyExists, is_transient, open_store

log = logging.getLogger(__name__)

RETRY_BASE_S = 0.5  # first backoff delay; doubles, with jitter
RETRY_DEADLINE_S = 60.0  # then the append fails with TransientError


@dataclass
class LedgerEntry:
    seq: int
    action: str  # promote | rollback
    registered_model: str
    version: str
    previous_version: str | None
    reasons: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    dag_run_id: str | None = None
    git_commit: str = "unknown"
    timestamp: str = ""
    user: str = ""
    token: str = ""  # idempotency token of the append that wrote it ("" before tokens existed)


class Ledger:
    def __init__(self, store_uri: str, registered_model: str):
        self.store = open_store(store_uri)
        self.model = registered_model
        self.prefix = f"ledger/{registered_model}/"

    def entries(self) -> list[LedgerEntry]:
        out = []
        for key in self.store.list(self.prefix):
            if key.endswith(".json"):
                out.append(LedgerEntry(**json.loads(self.store.get(key))))
        return sorted(out, key=lambda e: e.seq)

    def head(self) -> int:
        """Sequence number of the last entry (0 when empty)."""
        keys = [k for k in self.store.list(self.prefix) if k.endswith(".json")]
        return max((int(k.rsplit("/", 1)[-1].removesuffix(".json")) for k in keys), default=0)

    def last(self) -> LedgerEntry | None:
        entries = self.entries()
        return entries[-1] if entries else None

    def append(self, expected_head: int, **fields) -> LedgerEntry:
        """Write entry expected_head + 1, create-only. Raises RegistryError if
        another writer got there first, TransientError if the store stays
        unreachable past the deadline."""
        entry = LedgerEntry(
            seq=expected_head + 1,
            registered_model=self.model,
            timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            user=getpass.getuser(),
            token=uuid.uuid4().hex,
            **fields,
        )
        key = f"{self.prefix}{entry.seq:08d}.json"
        data = json.dumps(dump_nan(asdict(entry)), indent=2, allow_nan=False).encode()
        try:
            self._retrying(entry.seq, self.store.put_new, key, data)
            return entry
        except AlreadyExists:
            pass
        existing = self._retrying(entry.seq, self.store.get, key)
        if existing is not None and json.loads(existing).get("token") == entry.token:
            log.info("ledger entry %d: a retried write found its own entry", entry.seq)
            return entry
        raise RegistryError(
            f"{self.model}: another promotion or rollback was recorded first (ledger entry {entry.seq} "
            f"already exists in {self.store.uri}); this one is aborted and no alias was moved"
        )

    def _retrying(self, seq: int, fn, *args):
        """fn(*args), transient store errors retried with backoff until
        RETRY_DEADLINE_S, then raised as TransientError."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_exponential_jitter(initial=RETRY_BASE_S, max=10 * RETRY_BASE_S, jitter=RETRY_BASE_S),
            stop=tenacity.stop_after_delay(RETRY_DEADLINE_S),
            before_sleep=lambda rs: log.warning("ledger entry %d: %s; retrying", seq, rs.outcome.exception()),
            reraise=True,
        )
        try:
            return retrying(fn, *args)
        except Exception as e:
            if is_transient(e):
                raise TransientError(f"{self.model}: ledger entry {seq} in {self.store.uri}: the store failed "
                                     f"for {RETRY_DEADLINE_S:g} s ({e}); no alias was moved") from e  # fmt: skip
            raise
