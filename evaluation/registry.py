"""MLflow Model Registry logic: register the winning configuration, decide,
and move aliases.

A registered version's artifact is the serving configuration (model,
sampling params, prompt template) as `config.json`; serving loads it with
`load_config("models:/NAME@champion")`. Aliases:

- `challenger`: the latest registered winner of a sweep;
- `champion`: what production serves; moves only when the gate passes;
- `previous-champion`: the champion it replaced (rollback target).

The alias move is compare-and-set: the champion version read when deciding is
re-read right before moving; if it changed, the promotion aborts.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.errors import RegistryError
from evaluation.suite import Gate

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous-champion"
PROMOTE, REJECT, INCONCLUSIVE, KEEP = "PROMOTE", "REJECT", "INCONCLUSIVE", "KEEP"
CONFIG_ARTIFACT = "serving_config"


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


def _alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as e:
        if "not found" in str(e).lower() or getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST",):
            return None
        raise


def load_config(model_uri: str, tracking_uri: str | None = None) -> dict:
    """The serving configuration of a registered version, e.g.
    `models:/llmops-default@champion`."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as d:
        path = mlflow.artifacts.download_artifacts(model_uri, dst_path=d)
        return json.loads((Path(path) / "config.json").read_text())


def current_champion(name: str, tracking_uri: str | None = None) -> ChampionInfo | None:
    client = _client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return None
    version = _alias_version(client, name, CHAMPION)
    if version is None:
        return None
    mv = client.get_model_version(name, version)
    config = load_config(f"models:/{name}/{version}", tracking_uri)
    return ChampionInfo(
        version=version,
        config_id=mv.tags.get("llmops.config_id", config.get("config_id", "")),
        config=config,
        composite=float(mv.tags.get("llmops.composite", "nan")),
        dataset_digest=mv.tags.get("llmops.dataset_digest", ""),
    )


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    gate: Gate,
    *,
    champion_version: str | None = None,
    eligible_reasons: list[str] | None = None,
) -> Decision:
    """Gate: PROMOTE when there is no champion, or when the challenger beats
    the champion's composite *on the same dataset* by at least the margin."""
    comp = challenger.get("composite", math.nan)
    d = Decision(outcome=REJECT, challenger_composite=comp, champion_version=champion_version)
    if eligible_reasons:
        d.reasons = [f"challenger not eligible: {r}" for r in eligible_reasons]
        return d
    if champion_version is None:
        d.outcome = PROMOTE
        d.reasons = ["no current champion"]
        return d
    if champion is None or math.isnan(champion.get("composite", math.nan)):
        d.outcome = INCONCLUSIVE
        d.reasons = [f"champion v{champion_version} has no composite on this dataset; aliases left unchanged"]
        return d
    d.champion_composite = champion["composite"]
    delta = comp - d.champion_composite
    if delta >= gate.min_improvement:
        d.outcome = PROMOTE
        d.reasons = [
            f"composite {comp:.4f} beats champion v{champion_version} ({d.champion_composite:.4f}) "
            f"by {delta:+.4f} >= margin {gate.min_improvement}"
        ]
    else:
        d.reasons = [
            f"composite {comp:.4f} vs champion v{champion_version} ({d.champion_composite:.4f}): "
            f"{delta:+.4f} < margin {gate.min_improvement}"
        ]
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


def promote(name: str, version: str, expected_champion: str | None, tracking_uri: str | None = None) -> None:
    """Compare-and-set: move `champion` to `version` only if the champion is
    still `expected_champion`; the former champion becomes
    `previous-champion`. Verified by reading the aliases back."""
    client = _client(tracking_uri)
    actual = _alias_version(client, name, CHAMPION)
    if actual != expected_champion:
        raise RegistryError(
            f"{name}: champion changed during the run (expected {expected_champion!r}, found {actual!r}); "
            "promotion aborted, nothing moved"
        )
    if expected_champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, expected_champion)
    client.set_registered_model_alias(name, CHAMPION, version)
    if _alias_version(client, name, CHAMPION) != version:
        raise RegistryError(f"{name}: read-back after moving champion to v{version} does not match")


def version_tags(name: str, version: str, tracking_uri: str | None = None) -> dict[str, str]:
    return dict(_client(tracking_uri).get_model_version(name, version).tags)


def tag_version(name: str, version: str, tags: dict[str, str], tracking_uri: str | None = None) -> None:
    client = _client(tracking_uri)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)


def aliases(name: str, tracking_uri: str | None = None) -> dict[str, str]:
    client = _client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    except MlflowException:
        return {}
