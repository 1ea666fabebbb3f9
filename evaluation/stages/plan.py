"""Stage `plan`: which configurations this run evaluates (the suite's
search space plus the champion's baseline), what the cache already holds,
and which engines are needed (tasks plan_configs, group_by_model)."""

from __future__ import annotations

import logging

from evaluation import registry, settings
from evaluation.candidates import Config, expand_configs
from evaluation.stages.generate import cached_generations
from evaluation.stages.inputs import examples_for, probe_examples
from evaluation.suite import load_suite

log = logging.getLogger(__name__)


def plan(suite_path: str) -> list[dict]:
    """The configurations to evaluate: the suite's grid, plus the current
    champion's configuration as a baseline when its model is one of the
    suite's candidates (so the comparison is on the same examples)."""
    suite = load_suite(suite_path)
    configs = [dict(c.to_json(), role="candidate") for c in expand_configs(suite)]
    champ = registry.current_champion(suite.registered_model, settings.tracking_uri())
    if champ is not None:
        ids = {c["config_id"] for c in configs}
        by_name = {c.name: c for c in suite.candidates}
        if champ.config_id in ids:
            for c in configs:
                c["is_champion"] = c["config_id"] == champ.config_id
            log.info("champion v%s is one of this sweep's configurations", champ.version)
        elif champ.config.get("model") in by_name:
            cand = by_name[champ.config["model"]]
            cfg = Config.from_json({**champ.config, "source": cand.source.model_dump(exclude_none=True)})
            configs.append(dict(cfg.to_json(), role="champion", is_champion=True))
            log.info("champion v%s (%s) is re-evaluated on this dataset as a baseline", champ.version, cfg.label)
        else:
            log.warning(
                "champion v%s serves model %r, which is not a candidate of this suite: it cannot be "
                "re-evaluated on these examples, so the gate can only be INCONCLUSIVE",
                champ.version, champ.config.get("model"),
            )  # fmt: skip
    return configs


def annotate_missing(suite_path: str, configs: list[dict], identities: dict[str, dict]) -> dict:
    """Count each configuration's generations missing from the cache (0: it
    needs no engine)."""
    suite = load_suite(suite_path)
    dataset = examples_for(suite)
    dataset_ids = {ex.id for ex in dataset}
    examples = dataset + probe_examples(suite)
    for c in configs:
        hits, _ = cached_generations(Config.from_json(c), examples, identities[c["model"]])
        c["missing"] = len(examples) - len(hits)
        c["missing_dataset"] = len(dataset_ids - set(hits))
    total = sum(c["missing"] for c in configs)
    log.info("%d configurations, %d generations missing from the cache", len(configs), total)
    return configs


def batches_by_model(configs: list[dict]) -> list[dict]:
    """One generation batch per model: its configurations go to the engine
    together."""
    batches: dict[str, list[dict]] = {}
    for c in configs:
        batches.setdefault(c["model"], []).append(c)
    return [{"model": m, "configs": cs} for m, cs in batches.items()]


def models_of(suite_path: str, configs: list[dict]) -> dict[str, dict]:
    """Distinct models to serve: name -> {source, max_model_len}."""
    suite = load_suite(suite_path)
    by_name = {c.name: c for c in suite.candidates}
    return {
        c["model"]: {"source": c["source"], "max_model_len": by_name[c["model"]].max_model_len} for c in configs
    }


def engines_needed(suite_path: str, configs: list[dict]) -> set[str]:
    """Models whose engine start_engines starts: those with generations
    missing from the cache. With successive halving only the dataset rows
    count (the bias probes are generated for survivors only; their engines
    start on demand)."""
    suite = load_suite(suite_path)
    key = "missing_dataset" if suite.search.strategy == "successive_halving" else "missing"
    return {c["model"] for c in configs if c.get(key, c["missing"])}
