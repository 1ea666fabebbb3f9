"""The managed-engine path end to end, no fake: the bundled SmolLM2 model
materialized (the conversion is cached in LLMOPS_MODELS_DIR, default
.llmops/models), start_engines' body launching a real vLLM CPU server for it,
the generate stage on a tiny suite, the teardown, and no engine process left
behind. Slow (a vLLM cold start, about a minute on 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY

pytestmark = pytest.mark.slow


def _procs() -> list[tuple[int, int, list[str]]]:
    """(pid, process group, argv) of every live process."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError):
            continue
        if stat[0] != "Z":
            out.append((int(p.name), int(stat[2]), argv))
    return out


def test_start_generate_teardown_leaves_no_engine(tmp_path, llmops_home, monkeypatch):
    from evaluation.stages import generate as generate_stage
    from evaluation.stages import plan as plan_stage
    from evaluation.suite import load_suite
    from serving import ownership
    from serving.endpoints import endpoints_for, manager
    from serving.engine import ENTRYPOINT, not_the_engine

    monkeypatch.setenv("LLMOPS_MODELS_DIR", os.environ.get("LLMOPS_MODELS_DIR") or str(REPO / ".llmops" / "models"))
    served = f"smollm2-e2e-{os.getpid()}"  # unique on this machine: other engines may be running
    suite_path = tmp_path / "managed.yaml"
    suite_path.write_text(f"""
name: managed-e2e
dataset: {{path: {TINY}}}
candidates:
  - name: {served}
    source: {{bundled: smollm2-135m-instruct}}
search_space:
  temperature: [0.0]
  max_tokens: [16]
  prompt_templates:
    - name: terse
      template: "Context: {{context}}\\nQuestion: {{question}}\\nAnswer briefly."
generation: {{concurrency: 4, request_timeout_s: 120, max_retries: 1, ready_timeout_s: 600}}
registered_model: managed-e2e
""")
    run_id = "manual__managed-e2e"
    suite = load_suite(suite_path)
    try:
        # plan_configs and start_engines, as the DAG's task bodies run them.
        configs = plan_stage.plan(str(suite_path), run_id)
        configs = plan_stage.annotate_missing(str(suite_path), configs, plan_stage.identities(configs))
        needed = plan_stage.engines_needed(str(suite_path), configs)
        assert needed == {served}
        endpoints = endpoints_for(plan_stage.models_of(configs), needed,
                                  ready_timeout_s=suite.generation.ready_timeout_s, run_id=run_id)  # fmt: skip
        ep = endpoints[served]
        assert ep["managed"] and ep["launched_now"] and ep["base_url"]
        (rec,) = ownership.launched(run_id)  # recorded at launch, with the process's start time
        assert rec.name == served and not_the_engine(rec) is None

        # generate, mapped per model.
        for batch in plan_stage.batches_by_model(configs):
            (summary,) = generate_stage.generate_model(str(suite_path), batch["configs"], endpoints[batch["model"]],
                                                      run_id)  # fmt: skip
            assert summary["generated"] == summary["examples"] == 4 and summary["failed"] == 0

        # stop_engines (teardown).
        (res,) = ownership.stop_launched(run_id)
        assert res.signalled and res.pid == rec.pid
    finally:
        for r in ownership.launched(run_id):  # a failed test must not leave its engine running
            manager().stop_record(r, grace_s=10)
    left = [(pid, argv) for pid, pgid, argv in _procs()
            if pgid == rec.pid or (ENTRYPOINT in argv and served in argv)]  # fmt: skip
    assert not left, f"engine processes left after the teardown: {left}"
    assert manager().list() == [] and ownership.launched(run_id) == []
