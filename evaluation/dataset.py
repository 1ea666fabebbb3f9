"""Evaluation datasets: JSONL rows of (id, question, contexts, reference).

Loading checks structure (each line is UTF-8 and parses, fields have the
right types) and names the line of any fault. `validate_dataset` then runs the content checks
with Great Expectations (non-empty fields, unique ids, length bounds) and
raises DatasetError naming every offending row id and column, before any
engine time is spent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from evaluation.errors import DatasetError
from evaluation.hygiene import strip_invisible

log = logging.getLogger(__name__)

REQUIRED = ("id", "question", "contexts")
OPTIONAL = ("reference", "metadata")


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    contexts: tuple[str, ...]
    reference: str | None = None

    @property
    def digest(self) -> str:
        """Content hash: part of every cache key that depends on this row."""
        payload = json.dumps(
            {"q": self.question, "c": list(self.contexts), "r": self.reference}, sort_keys=True
        ).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def to_json(self) -> dict:
        d = asdict(self)
        d["contexts"] = list(self.contexts)
        return d


def load_examples(path: str | Path, limit: int | None = None, stats: dict | None = None) -> list[Example]:
    """Parse a JSONL dataset. Structural errors name the file and line.
    Invisible and zero-width characters are stripped from every text field
    (counted into `stats` when given)."""
    invisible: dict[str, int] = {}
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: dataset file not found")
    rows: list[Example] = []
    problems: list[str] = []
    with p.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"line {lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                "save the file as UTF-8")  # fmt: skip
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"line {lineno}: not valid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"line {lineno}: expected an object, got {type(obj).__name__}")
                continue
            missing = [k for k in REQUIRED if k not in obj]
            unknown = sorted(set(obj) - set(REQUIRED) - set(OPTIONAL))
            if missing:
                problems.append(f"line {lineno}: missing field(s) {missing}")
            if unknown:
                problems.append(f"line {lineno}: unknown field(s) {unknown}")
            ctx = obj.get("contexts")
            if not isinstance(ctx, list) or not all(isinstance(c, str) for c in ctx):
                problems.append(f"line {lineno}: field 'contexts' must be a list of strings")
                continue
            for key in ("id", "question"):
                if key in obj and not isinstance(obj[key], (str, int)):
                    problems.append(f"line {lineno}: field '{key}' must be a string")
            ref = obj.get("reference")
            if ref is not None and not isinstance(ref, str):
                problems.append(f"line {lineno}: field 'reference' must be a string or null")
            if missing or unknown or (ref is not None and not isinstance(ref, str)):
                continue
            # Judge hygiene: invisible characters never reach a model or judge.
            q, nq = strip_invisible(str(obj["question"]))
            cleaned = [strip_invisible(c) for c in ctx]
            r, nr = strip_invisible(ref) if ref is not None else (None, 0)
            n = nq + nr + sum(k for _, k in cleaned)
            if n:
                invisible[str(obj["id"])] = n
            rows.append(Example(str(obj["id"]), q, tuple(c for c, _ in cleaned), r))
            if limit and len(rows) >= limit:
                break
    if problems:
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(f"{p}: {len(problems)} malformed row(s):\n  " + "\n  ".join(shown) + more)
    if not rows:
        raise DatasetError(f"{p}: the dataset has no rows")
    if invisible:
        log.warning("%s: stripped %d invisible/zero-width character(s) from %d row(s): %s", p,
                    sum(invisible.values()), len(invisible), ", ".join(list(invisible)[:10]))  # fmt: skip
    if stats is not None:
        stats["invisible_chars_stripped"] = sum(invisible.values())
        stats["rows_with_invisible_chars"] = sorted(invisible)
    return rows


def dataset_digest(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.id.encode() + b"\x00" + ex.digest.encode() + b"\n")
    return h.hexdigest()[:16]


def validate_dataset(
    path: str | Path,
    *,
    limit: int | None = None,
    min_question_chars: int = 5,
    max_question_chars: int = 500,
    max_context_chars: int = 4000,
) -> dict:
    """Validate content with Great Expectations. Returns a summary; raises
    DatasetError listing each failed expectation with the row ids at fault."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import pandas as pd

    stats: dict = {}
    examples = load_examples(path, limit, stats)
    df = pd.DataFrame(
        {
            "id": [e.id.strip() for e in examples],
            "question": [e.question.strip() for e in examples],
            "n_contexts": [len(e.contexts) for e in examples],
            "min_context_chars": [min((len(c.strip()) for c in e.contexts), default=0) for e in examples],
            "max_context_chars": [max((len(c) for c in e.contexts), default=0) for e in examples],
        }
    )
    E = gx.expectations
    checks = [
        (E.ExpectColumnValuesToBeUnique(column="id"), "id", "duplicate id"),
        (E.ExpectColumnValueLengthsToBeBetween(column="id", min_value=1), "id", "empty id"),
        (
            E.ExpectColumnValueLengthsToBeBetween(
                column="question", min_value=min_question_chars, max_value=max_question_chars
            ),
            "question",
            f"question length outside [{min_question_chars}, {max_question_chars}] characters (empty counts)",
        ),
        (
            E.ExpectColumnValuesToBeBetween(column="n_contexts", min_value=1),
            "contexts",
            "no contexts",
        ),
        (
            E.ExpectColumnValuesToBeBetween(column="min_context_chars", min_value=1),
            "contexts",
            "an empty context string",
        ),
        (
            E.ExpectColumnValuesToBeBetween(column="max_context_chars", max_value=max_context_chars),
            "contexts",
            f"a context longer than {max_context_chars} characters",
        ),
    ]
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("llmops")
    asset = source.add_dataframe_asset("rows")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    failures: list[str] = []
    for expectation, column, what in checks:
        res = batch.validate(expectation, result_format="COMPLETE")
        if res.success:
            continue
        idx = res.result.get("unexpected_index_list") or []
        ids = sorted({examples[i].id if not isinstance(i, dict) else str(i) for i in idx})
        failures.append(f"column '{column}': {what}: row id(s) {ids[:20]}{' ...' if len(ids) > 20 else ''}")
    if failures:
        raise DatasetError(f"{path}: dataset failed validation:\n  " + "\n  ".join(failures))
    return {
        "rows": len(examples),
        "digest": dataset_digest(examples),
        "with_reference": sum(1 for e in examples if e.reference),
        "expectations": len(checks),
        **stats,
    }
