"""Append-only promotion ledger in the artifact store.

Every alias move of `champion` (promotion or rollback) is an entry
`ledger/<registered model>/<seq>.json`, written create-only *before* the
alias moves. Two promotions that read the same ledger head race for the same
sequence number: exactly one write succeeds, the other aborts without
touching the registry. Entries record what, when, why, the previous
version, the evidence, the DAG run and the git commit.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from dataclasses import asdict, dataclass, field

from evaluation.errors import RegistryError
from evaluation.jsonsafe import dump_nan
from evaluation.store import AlreadyExists, open_store


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
        another writer got there first."""
        entry = LedgerEntry(
            seq=expected_head + 1,
            registered_model=self.model,
            timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            user=getpass.getuser(),
            **fields,
        )
        try:
            data = json.dumps(dump_nan(asdict(entry)), indent=2, allow_nan=False).encode()
            self.store.put_new(f"{self.prefix}{entry.seq:08d}.json", data)
        except AlreadyExists:
            raise RegistryError(
                f"{self.model}: another promotion or rollback was recorded first (ledger entry {entry.seq} "
                f"already exists in {self.store.uri}); this one is aborted and no alias was moved"
            ) from None
        return entry
