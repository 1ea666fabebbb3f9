"""Model identity: serving.models.model_fingerprint (a local model directory)
and remote_fingerprint (a model behind an existing endpoint), which name a
model's answers in configuration ids and cache keys. Real files in tmp_path;
no engine is started."""

from __future__ import annotations

import os
import re

import pytest

from evaluation.errors import PermanentError
from serving import models
from serving.models import model_fingerprint, remote_fingerprint


@pytest.fixture
def model_dir(tmp_path, llmops_home):
    """A small model directory: weights, config, tokenizer, chat template,
    generation defaults. The digest memo lives in the test's LLMOPS_HOME."""
    d = tmp_path / "model"
    d.mkdir()
    files = {
        "model.safetensors": b"weights-A" * 100,
        "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
        "tokenizer.json": b'{"model": {"vocab": {"a": 0}}}',
        "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
        "chat_template.jinja": b"{% for m in messages %}{{ m.content }}{% endfor %}",
        "generation_config.json": b'{"temperature": 0.6}',
    }
    for name, content in files.items():
        (d / name).write_bytes(content)
    return d


def _rewrite(path, content: bytes) -> None:
    """New content of the same size, with an mtime surely different from the
    old one (the memo trusts size + mtime)."""
    st = path.stat()
    path.write_bytes(content)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_fingerprint_changes_with_weight_content_of_the_same_size(model_dir):
    before = model_fingerprint(model_dir)
    w = model_dir / "model.safetensors"
    _rewrite(w, w.read_bytes().replace(b"A", b"B"))
    assert (model_dir / "model.safetensors").stat().st_size == 900
    assert model_fingerprint(model_dir) != before


@pytest.mark.parametrize(
    "name", ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json", "config.json"]
)
def test_fingerprint_changes_with_tokenizer_template_and_config_files(model_dir, name):
    before = model_fingerprint(model_dir)
    f = model_dir / name
    old = f.read_bytes()
    _rewrite(f, old[:-2] + (b"X" if old[-2:-1] != b"X" else b"Y") + old[-1:])  # one byte, same size
    assert model_fingerprint(model_dir) != before, f"a change of {name} left the fingerprint unchanged"


def test_fingerprint_changes_with_max_model_len(model_dir):
    assert model_fingerprint(model_dir, max_model_len=2048) != model_fingerprint(model_dir, max_model_len=4096)
    assert model_fingerprint(model_dir, max_model_len=2048) == model_fingerprint(model_dir, max_model_len=2048)


def test_fingerprint_ignores_mtimes_and_unrelated_files(model_dir):
    before = model_fingerprint(model_dir)
    for f in model_dir.iterdir():  # touched (e.g. copied again), content identical
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    assert model_fingerprint(model_dir) == before
    (model_dir / "README.md").write_text("# a model card\n")
    assert model_fingerprint(model_dir) == before


def test_file_digests_are_memoized_while_size_and_mtime_are_unchanged(model_dir, monkeypatch):
    calls = []
    real = models._file_sha256
    monkeypatch.setattr(models, "_file_sha256", lambda p: calls.append(p.name) or real(p))
    first = model_fingerprint(model_dir)
    assert len(calls) == 6  # every identity file hashed once
    calls.clear()
    assert model_fingerprint(model_dir) == first and calls == []  # all from the memo
    w = model_dir / "model.safetensors"
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert model_fingerprint(model_dir) == first and calls == ["model.safetensors"]  # only the touched file


def test_a_directory_without_weights_or_a_missing_one_is_a_clear_error(model_dir, tmp_path):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(PermanentError, match=f"model directory {re.escape(str(model_dir))} has no weight files"):
        model_fingerprint(model_dir)
    missing = tmp_path / "no-such-model"
    with pytest.raises(PermanentError, match=f"model directory {re.escape(str(missing))} does not exist"):
        model_fingerprint(missing)


def _listing(**entry) -> dict:
    m = {"id": "m", "object": "model", "created": 1700000000, "owned_by": "vllm", "root": "/models/a",
         "parent": None, "max_model_len": 2048, **entry}  # fmt: skip
    return {"object": "list", "data": [m, {"id": "other", "root": "/models/o", "created": 1}]}


def test_remote_fingerprint_follows_url_and_root_not_timestamps():
    url = "http://127.0.0.1:8000/v1"
    fp = remote_fingerprint(url, "m", _listing())
    assert remote_fingerprint(url + "/", "m", _listing()) == fp  # the same endpoint
    assert remote_fingerprint(url, "m", _listing(created=1800000000)) == fp
    assert remote_fingerprint("http://127.0.0.1:8001/v1", "m", _listing()) != fp
    assert remote_fingerprint(url, "m", _listing(root="/models/b")) != fp


def test_remote_fingerprint_of_a_model_the_endpoint_does_not_serve_names_what_it_serves():
    with pytest.raises(PermanentError, match=r"does not serve a model named 'x' \(it serves \['m', 'other'\]\)"):
        remote_fingerprint("http://127.0.0.1:8000/v1", "x", _listing())
