"""A DAG run's storage: the one place that knows the run's file names.

Every stage reads and writes its bulk data (generations, scores, timings,
the frozen suite and dataset, the engines it launched) through a RunStore,
never through path strings of its own. Names that come from users (served
model names such as `org/model:tag`, Airflow run ids) are turned into safe
file names by `safe_name`, which keeps them readable and unique.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from evaluation import settings

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(name: str) -> str:
    """A file-name-safe form of `name`: unchanged when it is already safe,
    otherwise a readable slug plus a short hash of the original (so
    `org/m:1` and `org_m_1` never collide). Never a path, never hidden."""
    if _UNSAFE.search(name) is None and name not in ("", ".", "..") and not name.startswith("."):
        return name
    slug = _UNSAFE.sub("_", name).strip("._")[:80] or "x"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunStore:
    """Files of one DAG run under `settings.runs_dir()/<safe run id>/`."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.dir = settings.runs_dir() / safe_name(run_id)
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    # ---- generic JSON / JSONL
    def write_json(self, name: str, obj) -> Path:
        p = self.path(name)
        _atomic_write(p, json.dumps(obj, default=str))
        return p

    def read_json(self, name: str, default=None):
        p = self.path(name)
        return json.loads(p.read_text()) if p.exists() else default

    def write_jsonl(self, name: str, rows) -> Path:
        p = self.path(name)
        _atomic_write(p, "".join(json.dumps(r) + "\n" for r in rows))
        return p

    def read_jsonl(self, name: str) -> list[dict]:
        return [json.loads(x) for x in self.path(name).read_text().splitlines()]

    # ---- the run's named files
    @staticmethod
    def generations_name(config_id: str, kind: str = "generations") -> str:
        """kind: `generations` (dataset rows) or `probes` (bias probes)."""
        return f"{kind}-{safe_name(config_id)}.jsonl"

    def write_generations(self, config_id: str, rows, kind: str = "generations") -> Path:
        return self.write_jsonl(self.generations_name(config_id, kind), rows)

    def generations(self, config_id: str, kind: str = "generations") -> dict[str, dict]:
        """{example id: generation record} of one configuration."""
        return {g["example_id"]: g for g in self.read_jsonl(self.generations_name(config_id, kind))}

    def scores_name(self, config_id: str) -> str:
        return f"scores-{safe_name(config_id)}.jsonl"

    def write_scores(self, config_id: str, rows) -> Path:
        return self.write_jsonl(self.scores_name(config_id), rows)

    def scores(self, config_id: str) -> list[dict]:
        return self.read_jsonl(self.scores_name(config_id))

    def latency_name(self, config_id: str) -> str:
        return f"latency-{safe_name(config_id)}.jsonl"

    def config_values_name(self, config_id: str) -> str:
        return f"config-values-{safe_name(config_id)}.json"

    def replicates_name(self, config_id: str) -> str:
        return f"replicates-{safe_name(config_id)}.json"

    def generation_timing_name(self, model: str) -> str:
        return f"timing-{safe_name(model)}.json"

    def score_timing_name(self, config_id: str) -> str:
        return f"score-timing-{safe_name(config_id)}.json"

    def groups_name(self, scorer: str, config_id: str) -> str:
        return f"{safe_name(scorer)}-groups-{safe_name(config_id)}.json"

    HALVING = "halving.json"
    BASELINE = "baseline.json"
    LAUNCHED = "launched-engines.json"
    READINESS = "engine-readiness.json"  # readiness deadlines that span task retries
    REPORT = "report.json"
    PROMOTION_PLOT = "promotion_report.png"
