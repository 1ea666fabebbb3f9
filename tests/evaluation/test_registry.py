"""Registry logic against a real MLflow tracking + registry store (SQLite)."""

from __future__ import annotations

import math

import mlflow
import pytest

from evaluation import registry
from evaluation.errors import RegistryError
from evaluation.suite import Gate

NAME = "unit-registry"
CONFIG = {"config_id": "abc", "model": "m", "api": "chat", "sampling": {"temperature": 0.0}, "template": "{question}"}


@pytest.fixture
def uri(llmops_home):
    u = f"sqlite:///{llmops_home / 'mlflow.db'}"
    llmops_home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(u)
    exp = mlflow.create_experiment("unit", artifact_location=(llmops_home / "art").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    return u


def _register(uri: str, config_id: str, composite: float, run_tag: str) -> str:
    with mlflow.start_run() as run:
        pass
    tags = {"llmops.config_id": config_id, "llmops.composite": str(composite), "llmops.dataset_digest": "d1",
            "llmops.airflow_run_id": run_tag}  # fmt: skip
    return registry.register_version(NAME, run.info.run_id, {**CONFIG, "config_id": config_id}, tags=tags,
                                     tracking_uri=uri)  # fmt: skip


def test_register_sets_challenger_and_stores_the_serving_config(uri):
    v = _register(uri, "c1", 0.5, "r1")
    assert v == "1"
    assert registry.aliases(NAME, uri) == {"challenger": "1"}
    assert registry.load_config(f"models:/{NAME}@challenger", uri)["config_id"] == "c1"
    assert registry.current_champion(NAME, uri) is None
    assert registry.find_version_for_run(NAME, "r1", uri) == "1"
    assert registry.find_version_for_run(NAME, "other", uri) is None


def test_promote_moves_champion_and_keeps_previous(uri):
    v1 = _register(uri, "c1", 0.5, "r1")
    registry.promote(NAME, v1, None, uri)
    v2 = _register(uri, "c2", 0.6, "r2")
    registry.promote(NAME, v2, v1, uri)
    assert registry.aliases(NAME, uri) == {"challenger": "2", "champion": "2", "previous-champion": "1"}
    champ = registry.current_champion(NAME, uri)
    assert (champ.version, champ.config_id, champ.composite, champ.dataset_digest) == ("2", "c2", 0.6, "d1")


def test_compare_and_set_aborts_when_champion_changed(uri):
    v1 = _register(uri, "c1", 0.5, "r1")
    registry.promote(NAME, v1, None, uri)
    v2 = _register(uri, "c2", 0.6, "r2")
    v3 = _register(uri, "c3", 0.7, "r3")
    registry.promote(NAME, v3, v1, uri)  # another promotion lands first
    with pytest.raises(RegistryError, match="champion changed during the run"):
        registry.promote(NAME, v2, v1, uri)
    assert registry.aliases(NAME, uri)["champion"] == "3"


GATE = Gate(min_improvement=0.02)


@pytest.mark.parametrize(
    ("challenger", "champion", "version", "expected"),
    [
        (0.50, None, None, registry.PROMOTE),  # no champion yet
        (0.52, 0.50, "1", registry.PROMOTE),  # exactly at the margin
        (0.5199, 0.50, "1", registry.REJECT),  # just below it
        (0.40, 0.50, "1", registry.REJECT),  # worse
        (0.60, math.nan, "1", registry.INCONCLUSIVE),  # champion not comparable
    ],
)
def test_gate_decisions(challenger, champion, version, expected):
    champ = None if champion is None else {"composite": champion}
    d = registry.decide({"composite": challenger}, champ, GATE, champion_version=version)
    assert d.outcome == expected
    assert d.reasons


def test_ineligible_challenger_is_rejected_with_reasons():
    d = registry.decide({"composite": 0.9}, None, GATE, eligible_reasons=["failed_rate 0.5 > ceiling 0.2"])
    assert d.outcome == registry.REJECT and "failed_rate" in d.reasons[0]
