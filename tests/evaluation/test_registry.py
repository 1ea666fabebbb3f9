"""Registry logic against a real MLflow tracking + registry store (SQLite)."""

from __future__ import annotations

import mlflow
import pytest

from evaluation import registry
from evaluation.errors import RegistryError
from evaluation.ledger import Ledger

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


def _promote(uri, ledger, version, expected):
    return registry.promote(NAME, version, expected, uri, ledger=ledger, expected_head=ledger.head(),
                            reasons=["test"], dag_run_id="r")  # fmt: skip


def test_promote_moves_champion_keeps_previous_and_records_the_ledger(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    v1 = _register(uri, "c1", 0.5, "r1")
    e1 = _promote(uri, ledger, v1, None)
    v2 = _register(uri, "c2", 0.6, "r2")
    e2 = _promote(uri, ledger, v2, v1)
    assert registry.aliases(NAME, uri) == {"challenger": "2", "champion": "2", "previous-champion": "1"}
    champ = registry.current_champion(NAME, uri)
    assert (champ.version, champ.config_id, champ.composite, champ.dataset_digest) == ("2", "c2", 0.6, "d1")
    assert [(e.seq, e.action, e.previous_version, e.version) for e in ledger.entries()] == [
        (1, "promote", None, "1"), (2, "promote", "1", "2")]
    assert (e1.seq, e2.seq) == (1, 2) and e2.reasons == ["test"] and e2.timestamp


def test_compare_and_set_aborts_when_champion_changed(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    v1 = _register(uri, "c1", 0.5, "r1")
    _promote(uri, ledger, v1, None)
    v2 = _register(uri, "c2", 0.6, "r2")
    v3 = _register(uri, "c3", 0.7, "r3")
    _promote(uri, ledger, v3, v1)  # another promotion lands first
    with pytest.raises(RegistryError, match="champion changed during the run"):
        _promote(uri, ledger, v2, v1)
    assert registry.aliases(NAME, uri)["champion"] == "3"
    assert len(ledger.entries()) == 2


def test_stale_ledger_head_aborts_before_any_alias_move(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    v1 = _register(uri, "c1", 0.5, "r1")
    head = ledger.head()
    ledger.append(head, action="promote", version="9", previous_version=None)  # a racing writer
    with pytest.raises(RegistryError, match="another promotion or rollback was recorded first"):
        registry.promote(NAME, v1, None, uri, ledger=ledger, expected_head=head)
    assert "champion" not in registry.aliases(NAME, uri)


def test_rollback_restores_exactly_the_recorded_previous_version(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    versions = [_register(uri, f"c{i}", 0.5 + i / 10, f"r{i}") for i in range(3)]
    _promote(uri, ledger, versions[0], None)
    _promote(uri, ledger, versions[2], versions[0])  # v1 -> v3, skipping v2
    entry = registry.rollback(NAME, uri, ledger=ledger, reason="bad canary")
    assert registry.aliases(NAME, uri)["champion"] == "1"
    assert registry.aliases(NAME, uri)["previous-champion"] == "3"
    assert (entry.seq, entry.action, entry.version, entry.previous_version) == (3, "rollback", "1", "3")
    assert entry.reasons == ["bad canary"]


def test_rollback_with_an_empty_ledger_fails_clearly(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    _register(uri, "c1", 0.5, "r1")
    with pytest.raises(RegistryError, match="ledger .* is empty; nothing to roll back to"):
        registry.rollback(NAME, uri, ledger=ledger)


def test_rollback_refuses_when_the_registry_was_changed_outside_the_ledger(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    v1, v2 = _register(uri, "c1", 0.5, "r1"), _register(uri, "c2", 0.6, "r2")
    _promote(uri, ledger, v1, None)
    _promote(uri, ledger, v2, v1)
    mlflow.MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, "champion", "1")  # by hand, in the UI
    with pytest.raises(RegistryError, match="changed outside the ledger"):
        registry.rollback(NAME, uri, ledger=ledger)
    assert len(ledger.entries()) == 2


def test_finish_promotion_completes_an_interrupted_move(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    v1 = _register(uri, "c1", 0.5, "r1")
    entry = ledger.append(0, action="promote", version=v1, previous_version=None, dag_run_id="r1")
    registry.finish_promotion(NAME, entry, uri)  # the task died after writing the entry
    registry.finish_promotion(NAME, entry, uri)  # and is idempotent
    assert registry.aliases(NAME, uri)["champion"] == "1"
