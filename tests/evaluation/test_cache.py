"""Content-addressed result cache: keys, roundtrip, atomic writes."""

from __future__ import annotations

import json
import os

import pytest

import evaluation.cache as cache_mod
from evaluation.cache import ResultCache, cache_key

BASE_PARTS = dict(
    model="smollm2-135m-instruct",
    engine="vllm-cpu-0.1",
    sampling={"temperature": 0.0, "top_p": 1.0, "top_k": -1, "max_tokens": 64, "seed": 1234},
    template="abc123def456",
    example="0123456789abcdef",
)


def _all_files(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )


# --------------------------------------------------------------------------- #
# cache_key
# --------------------------------------------------------------------------- #


def test_cache_key_is_stable():
    k = cache_key(**BASE_PARTS)
    assert k == cache_key(**BASE_PARTS)
    assert len(k) == 64 and all(c in "0123456789abcdef" for c in k)
    # Keyword order and nested-dict order do not matter.
    reordered = dict(reversed(list(BASE_PARTS.items())))
    reordered["sampling"] = dict(reversed(list(BASE_PARTS["sampling"].items())))
    assert cache_key(**reordered) == k


@pytest.mark.parametrize(
    "part, value",
    [
        ("model", "gemma3-270m"),
        ("engine", "vllm-cpu-0.2"),
        ("sampling", {**BASE_PARTS["sampling"], "temperature": 0.7}),
        ("sampling", {**BASE_PARTS["sampling"], "seed": 1}),
        ("template", "ffffffffffff"),
        ("example", "fedcba9876543210"),
    ],
)
def test_cache_key_changes_with_any_part(part, value):
    changed = {**BASE_PARTS, part: value}
    assert cache_key(**changed) != cache_key(**BASE_PARTS)


def test_cache_key_changes_when_part_added_or_removed():
    k = cache_key(**BASE_PARTS)
    assert cache_key(**BASE_PARTS, scorer_version="2") != k
    without = {p: v for p, v in BASE_PARTS.items() if p != "engine"}
    assert cache_key(**without) != k


def test_cache_key_distinguishes_value_types():
    assert cache_key(a=1) != cache_key(a="1")
    assert cache_key(a=None) != cache_key(a="")


# --------------------------------------------------------------------------- #
# ResultCache
# --------------------------------------------------------------------------- #


def test_put_get_roundtrip(tmp_path):
    c = ResultCache(tmp_path)
    key = cache_key(**BASE_PARTS)
    value = {"text": "Paris is the capital.", "success": True, "latency_s": 0.42, "tokens": [1, 2, 3], "error": None}
    c.put("generations", key, value)
    assert c.get("generations", key) == value
    assert ("generations", key) in c
    # Namespaces are separate.
    assert c.get("scores", key) is None
    assert ("scores", key) not in c
    # A second cache on the same root sees the entry (it is on disk).
    assert ResultCache(tmp_path).get("generations", key) == value
    # No temp files are left behind after a successful write.
    files = _all_files(tmp_path)
    assert len(files) == 1
    assert files[0].endswith(f"{key}.json")
    assert not any(os.path.basename(f).startswith(".tmp-") for f in files)


def test_put_overwrites(tmp_path):
    c = ResultCache(tmp_path)
    key = cache_key(x=1)
    c.put("ns", key, {"v": 1})
    c.put("ns", key, {"v": 2})
    assert c.get("ns", key) == {"v": 2}
    assert len(_all_files(tmp_path)) == 1


def test_get_missing_key_is_none(tmp_path):
    c = ResultCache(tmp_path)
    assert c.get("generations", cache_key(x="never written")) is None
    assert ("generations", cache_key(x="never written")) not in c
    # Also when the root does not exist at all.
    assert ResultCache(tmp_path / "nonexistent").get("ns", cache_key(x=1)) is None


def test_simulated_crash_during_put_leaves_nothing(tmp_path, monkeypatch):
    c = ResultCache(tmp_path)
    key = cache_key(**BASE_PARTS)

    def exploding_dump(obj, fp, *args, **kwargs):
        fp.write('{"text": "half a val')  # a partial write, then the crash
        fp.flush()
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(cache_mod.json, "dump", exploding_dump)
    with pytest.raises(KeyboardInterrupt):
        c.put("generations", key, {"text": "half a value"})
    monkeypatch.undo()

    assert c.get("generations", key) is None
    assert ("generations", key) not in c
    assert _all_files(tmp_path) == []  # neither the entry nor a temp file

    # The cache still works afterwards.
    c.put("generations", key, {"text": "whole"})
    assert c.get("generations", key) == {"text": "whole"}


def test_crash_during_overwrite_keeps_previous_entry(tmp_path, monkeypatch):
    c = ResultCache(tmp_path)
    key = cache_key(x=1)
    c.put("ns", key, {"v": "old"})

    def failing_dump(obj, fp, *args, **kwargs):
        fp.write("{")
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.json, "dump", failing_dump)
    with pytest.raises(OSError, match="disk full"):
        c.put("ns", key, {"v": "new"})
    monkeypatch.undo()

    assert c.get("ns", key) == {"v": "old"}
    assert len(_all_files(tmp_path)) == 1


def test_corrupt_entry_reads_as_miss(tmp_path):
    c = ResultCache(tmp_path)
    key = cache_key(x=1)
    c.put("ns", key, {"v": 1})
    (path,) = [os.path.join(tmp_path, f) for f in _all_files(tmp_path)]
    with open(path, "w") as f:
        f.write('{"v": ')
    assert c.get("ns", key) is None
    # A valid file round-trips through plain json as well (format check).
    with open(path, "w") as f:
        json.dump({"v": 3}, f)
    assert c.get("ns", key) == {"v": 3}
