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


def _chain(uri, ledger, n):
    """Register n versions and promote each in turn: v1, v2, ... vn."""
    versions = []
    for i in range(n):
        versions.append(_register(uri, f"c{i}", 0.5 + i / 10, f"r{i}"))
        _promote(uri, ledger, versions[-1], versions[-2] if i else None)
    return versions


def test_a_second_rollback_walks_further_back_and_never_toggles(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    _chain(uri, ledger, 3)
    e = registry.rollback(NAME, uri, ledger=ledger, reason="canary 1")
    assert (e.version, e.previous_version) == ("2", "3")
    assert registry.aliases(NAME, uri) == {"challenger": "3", "champion": "2", "previous-champion": "3"}
    e = registry.rollback(NAME, uri, ledger=ledger, reason="canary 2")
    assert (e.seq, e.action, e.version, e.previous_version) == (5, "rollback", "1", "2")
    # previous-champion: the version that was champion immediately before this one.
    assert registry.aliases(NAME, uri) == {"challenger": "3", "champion": "1", "previous-champion": "2"}
    with pytest.raises(RegistryError, match=r"nothing further back to roll back to: v1 is the first champion"):
        registry.rollback(NAME, uri, ledger=ledger)
    assert registry.aliases(NAME, uri)["champion"] == "1" and len(ledger.entries()) == 5


def test_rollback_skips_a_version_that_was_already_rolled_back(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    v1, _ = _chain(uri, ledger, 2)
    registry.rollback(NAME, uri, ledger=ledger)  # v2 -> v1: v2 is out
    v3 = _register(uri, "c3", 0.9, "r3")
    _promote(uri, ledger, v3, v1)
    assert registry.rollback(NAME, uri, ledger=ledger).version == "1"
    with pytest.raises(RegistryError, match="nothing further back"):  # never back to the rolled-back v2
        registry.rollback(NAME, uri, ledger=ledger)
    assert registry.aliases(NAME, uri)["champion"] == "1"


def test_a_retried_rollback_of_the_same_dag_run_does_not_roll_back_twice(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    _chain(uri, ledger, 3)
    first = registry.rollback(NAME, uri, ledger=ledger, dag_run_id="manual__1")
    again = registry.rollback(NAME, uri, ledger=ledger, dag_run_id="manual__1")  # the Airflow retry
    assert again == first and registry.aliases(NAME, uri)["champion"] == "2" and len(ledger.entries()) == 4


def test_a_retried_rollback_finishes_the_alias_move_its_first_try_left_undone(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    _chain(uri, ledger, 2)
    # The first try wrote its ledger entry and died before moving the alias.
    ledger.append(ledger.head(), action="rollback", version="1", previous_version="2", dag_run_id="manual__1")
    entry = registry.rollback(NAME, uri, ledger=ledger, dag_run_id="manual__1")
    assert entry.seq == 3 and registry.aliases(NAME, uri)["champion"] == "1" and len(ledger.entries()) == 3


def test_first_promotion_clears_a_stale_previous_champion(uri, llmops_home):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    v1, v2 = _register(uri, "c1", 0.5, "r1"), _register(uri, "c2", 0.6, "r2")
    mlflow.MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, "previous-champion", v1)  # by hand
    _promote(uri, ledger, v2, None)
    assert registry.aliases(NAME, uri) == {"challenger": "2", "champion": "2"}


# Registry faults. A fake only to inject the fault: the real MlflowClient
# method raises MlflowException with a transient error code the first N times
# (what a remote tracking server answering HTTP 503, or a locked database,
# gives), then goes through to the real SQLite-backed registry.


def _flaky(monkeypatch, method: str, failures: int, code: str = "TEMPORARILY_UNAVAILABLE") -> list:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    real, calls = getattr(MlflowClient, method), []

    def flaky(self, *args, **kwargs):
        calls.append(args)
        if len(calls) <= failures:
            raise MlflowException(f"injected {code}", error_code=getattr(databricks_pb2, code))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, method, flaky)
    return calls


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(registry, "RETRY_BASE_S", 0.01)
    monkeypatch.setattr(registry, "RETRY_DEADLINE_S", 0.5)


def test_a_transient_registry_error_is_retried_not_taken_for_no_champion(uri, llmops_home, monkeypatch, fast_retries):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    _chain(uri, ledger, 2)
    calls = _flaky(monkeypatch, "get_registered_model", 2)
    champ = registry.current_champion(NAME, uri)
    assert champ is not None and champ.version == "2"
    assert len(calls) >= 3
    _flaky(monkeypatch, "get_registered_model", 2, "REQUEST_LIMIT_EXCEEDED")
    assert registry.aliases(NAME, uri)["champion"] == "2"


def test_a_rollback_under_transient_registry_faults_still_goes_through(uri, llmops_home, monkeypatch, fast_retries):
    ledger = Ledger(str(llmops_home / "store"), NAME)
    _chain(uri, ledger, 2)
    _flaky(monkeypatch, "get_registered_model", 1)
    _flaky(monkeypatch, "get_model_version_by_alias", 1)
    _flaky(monkeypatch, "set_registered_model_alias", 1)  # alias writes are idempotent: retried too
    assert registry.rollback(NAME, uri, ledger=ledger).version == "1"
    assert registry.aliases(NAME, uri)["champion"] == "1"


def test_a_registry_that_stays_unavailable_raises_transient_error_after_the_deadline(uri, llmops_home, monkeypatch,
                                                                                    fast_retries):  # fmt: skip
    from evaluation.errors import TransientError

    _register(uri, "c1", 0.5, "r1")
    _flaky(monkeypatch, "get_registered_model", 10**6)
    with pytest.raises(TransientError, match="TEMPORARILY_UNAVAILABLE"):
        registry.current_champion(NAME, uri)
    with pytest.raises(TransientError):
        registry.aliases(NAME, uri)


def test_a_permanent_registry_error_fails_at_once(uri, llmops_home, monkeypatch, fast_retries):
    _register(uri, "c1", 0.5, "r1")
    calls = _flaky(monkeypatch, "get_registered_model", 10**6, "PERMISSION_DENIED")
    with pytest.raises(RegistryError, match="PERMISSION_DENIED"):
        registry.current_champion(NAME, uri)
    assert len(calls) == 1


def test_no_registered_model_is_no_champion(uri):
    assert registry.current_champion("never-registered", uri) is None
    assert registry.aliases("never-registered", uri) == {}


def test_an_unreachable_tracking_server_is_transient_not_no_champion(monkeypatch, fast_retries):
    # Real MLflow REST client against a closed port (nothing listens on 9).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    from evaluation.errors import TransientError

    with pytest.raises(TransientError):
        registry.current_champion(NAME, "http://127.0.0.1:9")
