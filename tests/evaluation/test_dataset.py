"""Dataset loading (structure) and validation (content, Great Expectations)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evaluation.dataset import Example, dataset_digest, load_examples, validate_dataset
from evaluation.errors import DatasetError, PermanentError

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "data" / "tiny_rag.jsonl"


def _row(i: int | str, **over) -> dict:
    d = {
        "id": f"r-{i}",
        "question": f"What is item number {i}?",
        "contexts": [f"Item number {i} is a small example row used in tests."],
        "reference": f"It is item {i}.",
    }
    d.update(over)
    return d


def _write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- #
# load_examples
# --------------------------------------------------------------------------- #


def test_load_tiny_rag():
    rows = load_examples(TINY)
    assert [r.id for r in rows] == ["t-1", "t-2", "t-3", "t-4"]
    first = rows[0]
    assert isinstance(first, Example)
    assert first.question == "What is the capital of France?"
    assert first.contexts == ("Paris is the capital of France. It is the largest city in the country.",)
    assert isinstance(first.contexts, tuple)
    assert first.reference == "The capital of France is Paris."


def test_load_limit_and_blank_lines(tmp_path):
    p = _write_jsonl(tmp_path / "d.jsonl", [_row(1), "", "   ", _row(2), _row(3)])
    assert [r.id for r in load_examples(p)] == ["r-1", "r-2", "r-3"]
    assert [r.id for r in load_examples(p, limit=2)] == ["r-1", "r-2"]


def test_load_optional_fields_and_int_id(tmp_path):
    row = _row(1, id=7, metadata={"topic": "x"})
    del row["reference"]
    p = _write_jsonl(tmp_path / "d.jsonl", [row])
    (ex,) = load_examples(p)
    assert ex.id == "7"
    assert ex.reference is None


@pytest.mark.parametrize(
    "bad, line_no, needle",
    [
        pytest.param('{"id": "r-x", "question": "broken', 2, "not valid JSON", id="bad-json"),
        pytest.param({"id": "r-x", "contexts": ["c"]}, 2, "missing field(s) ['question']", id="missing-field"),
        pytest.param(_row("x", contexts="a single string"), 2, "'contexts' must be a list", id="contexts-not-list"),
        pytest.param(_row("x", contexts=["ok", 3]), 2, "'contexts' must be a list of strings", id="contexts-non-str"),
        pytest.param(_row("x", answer="extra"), 2, "unknown field(s) ['answer']", id="unknown-field"),
        pytest.param('["not", "an", "object"]', 2, "expected an object", id="not-an-object"),
        pytest.param(_row("x", reference=5), 2, "'reference' must be a string", id="reference-not-str"),
    ],
)
def test_malformed_line_is_named(tmp_path, bad, line_no, needle):
    p = _write_jsonl(tmp_path / "d.jsonl", [_row(1), bad, _row(3)])
    with pytest.raises(DatasetError) as exc:
        load_examples(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert f"line {line_no}:" in msg
    assert needle in msg
    # Only the bad line is blamed.
    assert "line 1:" not in msg and "line 3:" not in msg
    assert "1 malformed row(s)" in msg


def test_invalid_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "latin1.jsonl"
    good = json.dumps(_row(1)).encode() + b"\n"
    bad = json.dumps(_row(2, question="Qu'est-ce que caf\u00e9 ?")).encode().replace(b"\\u00e9", b"\xe9") + b"\n"
    p.write_bytes(good + bad + good.replace(b"r-1", b"r-3"))
    with pytest.raises(DatasetError) as exc:
        load_examples(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "line 2: not valid UTF-8" in msg
    assert "1 malformed row(s)" in msg


def test_several_malformed_lines_all_named(tmp_path):
    p = _write_jsonl(
        tmp_path / "d.jsonl",
        [_row(1), "{nope", _row(3), _row(4, contexts="x"), _row(5, extra=1)],
    )
    with pytest.raises(DatasetError) as exc:
        load_examples(p)
    msg = str(exc.value)
    assert "3 malformed row(s)" in msg
    assert re.search(r"line 2: not valid JSON", msg)
    assert re.search(r"line 4: field 'contexts'", msg)
    assert re.search(r"line 5: unknown field\(s\) \['extra'\]", msg)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="no rows"):
        load_examples(empty)
    with pytest.raises(DatasetError, match="not found"):
        load_examples(tmp_path / "missing.jsonl")


def test_dataset_error_is_permanent():
    assert issubclass(DatasetError, PermanentError)


# --------------------------------------------------------------------------- #
# digests
# --------------------------------------------------------------------------- #


def test_dataset_digest_changes_when_one_question_changes(tmp_path):
    rows = load_examples(TINY)
    again = load_examples(TINY)
    assert dataset_digest(rows) == dataset_digest(again)

    changed = [_row(1), _row(2), _row(3, question="What is item number three, really?")]
    base = [_row(1), _row(2), _row(3)]
    d_base = dataset_digest(load_examples(_write_jsonl(tmp_path / "a.jsonl", base)))
    d_changed = dataset_digest(load_examples(_write_jsonl(tmp_path / "b.jsonl", changed)))
    assert d_base != d_changed


def test_example_digest_covers_content_not_id():
    a = Example("a", "What is X?", ("X is Y.",), "Y")
    assert Example("b", "What is X?", ("X is Y.",), "Y").digest == a.digest
    assert Example("a", "What is Z?", ("X is Y.",), "Y").digest != a.digest
    assert Example("a", "What is X?", ("X is W.",), "Y").digest != a.digest
    assert Example("a", "What is X?", ("X is Y.",), None).digest != a.digest
    # ... but the dataset digest does include ids.
    assert dataset_digest([a]) != dataset_digest([Example("b", "What is X?", ("X is Y.",), "Y")])


# --------------------------------------------------------------------------- #
# validate_dataset (Great Expectations: slow import, so few calls)
# --------------------------------------------------------------------------- #


def _failure_line(msg: str, what: str) -> str:
    lines = [ln for ln in msg.splitlines() if what in ln]
    assert len(lines) == 1, f"expected one line with {what!r} in:\n{msg}"
    return lines[0]


def _ids_in(line: str) -> set[str]:
    m = re.search(r"row id\(s\) \[(.*?)\]", line)
    assert m, line
    return set(re.findall(r"'([^']*)'", m.group(1)))


def test_validate_good_and_bad_files(tmp_path):
    good = validate_dataset(TINY)
    assert good["rows"] == 4
    assert good["digest"] == dataset_digest(load_examples(TINY))
    assert good["with_reference"] == 4
    assert good["expectations"] >= 5

    rows = [
        _row(1),
        _row("dup"),
        _row("dup", question="Another question with the same id?"),
        _row("noq", question="   "),
        _row("emptyctx", contexts=["A fine context sentence.", "  "]),
        _row("long", contexts=["x" * 120]),
        _row(7),
        _row("blank", id="   "),
    ]
    bad = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetError) as exc:
        validate_dataset(bad, max_context_chars=100)
    msg = str(exc.value)
    assert str(bad) in msg
    assert "failed validation" in msg

    blank = _failure_line(msg, "empty id")
    assert _ids_in(blank) == {"   "}

    dup = _failure_line(msg, "duplicate id")
    assert "column 'id'" in dup
    assert _ids_in(dup) == {"r-dup"}

    q = _failure_line(msg, "question length")
    assert "column 'question'" in q
    assert _ids_in(q) == {"r-noq"}

    empty_ctx = _failure_line(msg, "empty context string")
    assert "column 'contexts'" in empty_ctx
    assert _ids_in(empty_ctx) == {"r-emptyctx"}

    long_ctx = _failure_line(msg, "longer than 100 characters")
    assert "column 'contexts'" in long_ctx
    assert _ids_in(long_ctx) == {"r-long"}

    # Good rows are never blamed.
    for clean in ("r-1", "r-7"):
        assert f"'{clean}'" not in msg

    # The same file passes when the bounds allow it and duplicates/empties are gone.
    fixed = _write_jsonl(tmp_path / "fixed.jsonl", [rows[0], rows[1], rows[5], rows[6]])
    ok = validate_dataset(fixed, max_context_chars=200)
    assert ok["rows"] == 4
    assert ok["digest"] == dataset_digest(load_examples(fixed))
