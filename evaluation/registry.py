"""MLflow Model Registry logic: register the winning configuration, decide,
and move aliases.

A registered version's artifact is the serving configuration (model,
sampling params, prompt template) as `config.json`; serving loads it with
`load_config("models:/NAME@champion")`. Aliases:

- `challenger`: the latest registered winner of a sweep;
- `champion`: what production serves; moves only when the gate passes, or
  back on a rollback;
- `previous-champion`: the version that was champion immediately before the
  current one, i.e. the one the last move (promotion or rollback) replaced;
  absent after the first promotion. It is a record, not the rollback target.

The alias move is compare-and-set: the champion version read when deciding is
re-read right before moving; if it changed, the promotion aborts. A rollback
walks back through the ledger's history (`champion_history`), one step per
rollback, and never toggles between two versions.

Registry reads and alias writes retry transient faults (MLflow's codes for HTTP 503/504/429 -
a locked database answers TEMPORARILY_UNAVAILABLE - and network errors) with
backoff until RETRY_DEADLINE_S, then raise TransientError; only
RESOURCE_DOES_NOT_EXIST means "no registered model"; any other MLflow error
is a RegistryError at once.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tenacity

from evaluation import store
from evaluation.errors import RegistryError, TransientError
from evaluation.ranking import constraint_violations
from evaluation.suite import Gate

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous-champion"
PROMOTE, REJECT, INCONCLUSIVE, KEEP = "PROMOTE", "REJECT", "INCONCLUSIVE", "KEEP"
CONFIG_ARTIFACT = "serving_config"

RETRY_BASE_S = 0.5  # first backoff delay of a registry read; doubles, with jitter
RETRY_DEADLINE_S = 60.0  # then TransientError (the Airflow task fails and retries)
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
_TRANSIENT_CODES = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
)


@dataclass
class ChampionInfo:
    version: str
    config_id: str
    config: dict
    composite: float  # as recorded when it was registered
    dataset_digest: str


@dataclass
class Decision:
    outcome: str
    reasons: list[str] = field(default_factory=list)
    challenger_composite: float = math.nan
    champion_composite: float = math.nan
    champion_version: str | None = None

    def to_json(self) -> dict:
        return {
            "outcome": self.outcome,
            "reasons": self.reasons,
            "challenger_composite": self.challenger_composite,
            "champion_composite": self.champion_composite,
            "champion_version": self.champion_version,
        }


def _client(tracking_uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _is_transient(exc: BaseException | None) -> bool:
    """A transient MLflow error code, or a network failure anywhere in the
    exception's chain (MLflow's REST client wraps those in an
    MlflowException with the generic INTERNAL_ERROR code)."""
    import requests
    from mlflow.exceptions import MlflowException

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MlflowException) and exc.error_code in _TRANSIENT_CODES:
            return True
        if store.is_transient(exc) or isinstance(exc, requests.exceptions.RetryError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _call(what: str, fn, *args):
    """fn(*args) against the registry (a read, or an idempotent alias
    write): transient faults retried with backoff
    until RETRY_DEADLINE_S, then TransientError; RESOURCE_DOES_NOT_EXIST is
    re-raised for the caller; any other MlflowException is a RegistryError."""
    from mlflow.exceptions import MlflowException

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_is_transient),
        wait=tenacity.wait_exponential_jitter(initial=RETRY_BASE_S, max=10 * RETRY_BASE_S, jitter=RETRY_BASE_S),
        stop=tenacity.stop_after_delay(RETRY_DEADLINE_S),
        before_sleep=lambda rs: log.warning("%s: %s; retrying", what, rs.outcome.exception()),
        reraise=True,
    )
    try:
        return retrying(fn, *args)
    except Exception as e:
        if _is_transient(e):
            raise TransientError(f"{what}: the registry kept failing for {RETRY_DEADLINE_S:g} s: {e}") from e
        if isinstance(e, MlflowException) and e.error_code != NOT_FOUND:
            raise RegistryError(f"{what}: {e}") from e
        raise


def _aliases(client, name: str) -> dict[str, str]:
    """{alias: version}; {} when the registered model does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        model = _call(f"{name}: reading the aliases", client.get_registered_model, name)
    except MlflowException as e:
        if e.error_code == NOT_FOUND:
            return {}
        raise
    return {a: str(v) for a, v in model.aliases.items()}


def _alias_version(client, name: str, alias: str) -> str | None:
    return _aliases(client, name).get(alias)


def load_config(model_uri: str, tracking_uri: str | None = None) -> dict:
    """The serving configuration of a registered version, e.g.
    `models:/llmops-default@champion`."""
    # Resolved through a client bound to `tracking_uri`: mlflow.artifacts'
    # models:/ resolution reads the *global* registry URI whatever is passed.
    client = _client(tracking_uri)
    ref = model_uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        mv = _call(model_uri, client.get_model_version_by_alias, name, alias)
    else:
        name, version = ref.rsplit("/", 1)
        mv = _call(model_uri, client.get_model_version, name, version)
    with tempfile.TemporaryDirectory() as d:
        path = _call(model_uri, client.download_artifacts, mv.run_id, CONFIG_ARTIFACT, d)
        config = Path(path) / "config.json"
        if not config.is_file():
            raise RegistryError(f"{model_uri} has no config.json: it was not registered by llmops")
        return json.loads(config.read_text())


def current_champion(name: str, tracking_uri: str | None = None) -> ChampionInfo | None:
    """The version behind `champion`, or None when there is no registered
    model or no champion alias. Registry faults raise (see the module doc)."""
    client = _client(tracking_uri)
    version = _alias_version(client, name, CHAMPION)
    if version is None:
        return None
    what = f"{name}: champion v{version}"
    mv = _call(what, client.get_model_version, name, version)
    config = _call(what, load_config, f"models:/{name}/{version}", tracking_uri)
    return ChampionInfo(
        version=version,
        config_id=mv.tags.get("llmops.config_id", config.get("config_id", "")),
        config=config,
        composite=float(mv.tags.get("llmops.composite", "nan")),
        dataset_digest=mv.tags.get("llmops.dataset_digest", ""),
    )


def missing_metrics(metrics: dict[str, float], gate: Gate) -> list[str]:
    needed = ["composite", *gate.floors, *gate.ceilings]
    return [m for m in dict.fromkeys(needed) if math.isnan(metrics.get(m, math.nan))]


def decide(
    challenger: dict[str, float],
    comparison,  # evaluation.stats.PairedResult of the composite, or None
    gate: Gate,
    *,
    champion_version: str | None = None,
) -> Decision:
    """The gate. PROMOTE needs: no floor/ceiling broken, no gated metric
    missing, enough scored examples, and - when there is a champion - the
    lower confidence bound of the paired composite improvement at or above
    `gate.min_improvement` with a (Holm-adjusted) one-sided p below
    `gate.alpha`. INCONCLUSIVE never moves an alias."""
    comp = challenger.get("composite", math.nan)
    d = Decision(outcome=REJECT, challenger_composite=comp, champion_version=champion_version)
    broken = constraint_violations(challenger, gate)
    if broken:
        d.reasons = broken
        return d
    d.outcome = INCONCLUSIVE
    missing = missing_metrics(challenger, gate)
    if missing:
        d.reasons = [f"metric(s) missing: {', '.join(missing)}"]
        return d
    n_scored = challenger.get("n_scored", 0)
    if n_scored < gate.min_scored_examples:
        d.reasons = [f"{int(n_scored)} scored examples < minimum {gate.min_scored_examples}"]
        return d
    if champion_version is None:
        d.outcome = PROMOTE
        d.reasons = ["no current champion"]
        return d
    if comparison is None or math.isnan(comparison.diff):
        d.reasons = [f"no paired results for champion v{champion_version} on this dataset"]
        return d
    d.champion_composite = comparison.champion_mean
    if comparison.n < gate.min_scored_examples:
        d.reasons = [f"{comparison.n} paired examples < minimum {gate.min_scored_examples}"]
        return d
    p = comparison.p_adjusted if comparison.p_adjusted is not None else comparison.p_value
    ci = f"{gate.confidence:.0%} CI [{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]"
    what = (f"composite improvement over champion v{champion_version} {comparison.diff:+.4f}, {ci}, "
            f"p={p:.4f} (one-sided, Holm-adjusted), d_z={comparison.effect_size:.2f}, n={comparison.n}")  # fmt: skip
    if comparison.ci_low >= gate.min_improvement and p < gate.alpha:
        d.outcome = PROMOTE
        d.reasons = [f"{what}: lower bound >= margin {gate.min_improvement} and p < {gate.alpha}"]
    elif comparison.ci_high < gate.min_improvement:
        d.outcome = REJECT
        d.reasons = [f"{what}: the whole interval is below the margin {gate.min_improvement}"]
    elif comparison.ci_low < gate.min_improvement:
        d.reasons = [f"{what}: the interval straddles the margin {gate.min_improvement}"]
    else:
        d.reasons = [f"{what}: not significant at alpha {gate.alpha}"]
    return d


def register_version(
    name: str,
    run_id: str,
    config: dict,
    *,
    tags: dict[str, str],
    description: str = "",
    tracking_uri: str | None = None,
) -> str:
    """Log the configuration as an artifact of `run_id` and register it as a
    new version of `name`; set alias `challenger`. Returns the version."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "config.json"
        p.write_text(json.dumps(config, indent=2, sort_keys=True))
        client.log_artifact(run_id, str(p), artifact_path=CONFIG_ARTIFACT)
    try:
        client.create_registered_model(
            name, description="LLM serving configurations (model + sampling params + prompt) chosen by llmops"
        )
    except MlflowException as e:
        if "already exists" not in str(e).lower():
            raise
    run = client.get_run(run_id)
    mv = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/{CONFIG_ARTIFACT}", run_id=run_id, tags=tags, description=description
    )
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def find_version_for_run(name: str, airflow_run_id: str, tracking_uri: str | None = None) -> str | None:
    """The version a (retried) DAG run already registered, if any, so a retry
    never registers the same winner twice."""
    client = _client(tracking_uri)
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.tags.get("llmops.airflow_run_id") == airflow_run_id:
            return str(mv.version)
    return None


def _move_champion(client, name: str, version: str, previous: str | None) -> None:
    """`previous-champion` always names the version `champion` replaces."""
    what = f"{name}: moving champion to v{version}"
    if previous is not None:
        _call(what, client.set_registered_model_alias, name, PREVIOUS, previous)
    elif PREVIOUS in _aliases(client, name):
        _call(what, client.delete_registered_model_alias, name, PREVIOUS)
    _call(what, client.set_registered_model_alias, name, CHAMPION, version)
    if _alias_version(client, name, CHAMPION) != str(version):
        raise RegistryError(f"{name}: read-back after moving champion to v{version} does not match")


def promote(
    name: str,
    version: str,
    expected_champion: str | None,
    tracking_uri: str | None = None,
    *,
    ledger,  # evaluation.ledger.Ledger
    expected_head: int,
    reasons: list[str] = (),
    evidence: dict | None = None,
    dag_run_id: str | None = None,
    git_commit: str = "unknown",
):
    """Compare-and-set: move `champion` to `version` only if the champion is
    still `expected_champion` and nobody appended to the ledger since
    `expected_head` was read. The ledger entry is written (create-only) before
    the alias moves; the former champion becomes `previous-champion`; the
    move is verified by reading the alias back. Returns the ledger entry."""
    client = _client(tracking_uri)
    actual = _alias_version(client, name, CHAMPION)
    if actual != expected_champion:
        raise RegistryError(
            f"{name}: champion changed during the run (expected {expected_champion!r}, found {actual!r}); "
            "promotion aborted, nothing moved"
        )
    entry = ledger.append(
        expected_head, action="promote", version=str(version), previous_version=expected_champion,
        reasons=list(reasons), evidence=evidence or {}, dag_run_id=dag_run_id, git_commit=git_commit,
    )  # fmt: skip
    _move_champion(client, name, str(version), expected_champion)
    return entry


def finish_promotion(name: str, entry, tracking_uri: str | None = None) -> None:
    """Complete the alias move of a ledger entry whose task died between
    writing the entry and moving the alias (idempotent)."""
    client = _client(tracking_uri)
    actual = _alias_version(client, name, CHAMPION)
    if actual == entry.version:
        return
    if actual != entry.previous_version:
        raise RegistryError(f"{name}: champion is {actual!r}, expected {entry.previous_version!r}; not resuming")
    _move_champion(client, name, entry.version, entry.previous_version)


def champion_history(entries) -> list[str]:
    """The versions that served as champion, oldest first, as the ledger
    records them, with rolled-back versions taken out: a promotion pushes its
    version; a rollback pops back to the version it restored. The last item is
    the current champion; the one before it is where a rollback goes."""
    history: list[str] = []
    for e in entries:
        if e.action == "rollback" and e.version in history[:-1]:
            restored = max(i for i, v in enumerate(history[:-1]) if v == e.version)
            del history[restored + 1 :]
        else:  # a promotion (or an old entry that rolled "back" to a version not in the history)
            history.append(e.version)
    return history


def rollback(
    name: str,
    tracking_uri: str | None = None,
    *,
    ledger,
    reason: str = "manual rollback",
    dag_run_id: str | None = None,
    git_commit: str = "unknown",
):
    """Move `champion` one step back through the ledger's history: to the
    version that was champion before the current one, skipping versions that
    were rolled back, never back and forth. Same compare-and-set path as a
    promotion. A retry of the same DAG run finishes its own rollback instead
    of rolling back twice. Returns the entry."""
    entries = ledger.entries()
    if not entries:
        raise RegistryError(f"{name}: the promotion ledger in {ledger.store.uri} is empty; nothing to roll back to")
    last = entries[-1]
    if dag_run_id is not None and last.action == "rollback" and last.dag_run_id == dag_run_id:
        finish_promotion(name, last, tracking_uri)  # this run's earlier try wrote the entry
        return last
    client = _client(tracking_uri)
    actual = _alias_version(client, name, CHAMPION)
    if actual != last.version:
        raise RegistryError(
            f"{name}: champion is {actual!r} but the ledger's last entry ({last.seq}) set v{last.version}; "
            "the registry was changed outside the ledger, refusing to roll back"
        )
    earlier = [v for v in champion_history(entries)[:-1] if v != last.version]
    if not earlier:
        raise RegistryError(
            f"{name}: nothing further back to roll back to: v{last.version} is the first champion in the ledger "
            f"({ledger.store.uri}) that was not rolled back"
        )
    target = earlier[-1]
    entry = ledger.append(
        last.seq, action="rollback", version=target, previous_version=last.version,
        reasons=[reason], evidence={"rolled_back_entry": last.seq}, dag_run_id=dag_run_id, git_commit=git_commit,
    )  # fmt: skip
    _move_champion(client, name, target, last.version)
    return entry


def version_tags(name: str, version: str, tracking_uri: str | None = None) -> dict[str, str]:
    return dict(_client(tracking_uri).get_model_version(name, version).tags)


def tag_version(name: str, version: str, tags: dict[str, str], tracking_uri: str | None = None) -> None:
    client = _client(tracking_uri)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)


def aliases(name: str, tracking_uri: str | None = None) -> dict[str, str]:
    """{alias: version}; {} when the registered model does not exist."""
    return _aliases(_client(tracking_uri), name)
