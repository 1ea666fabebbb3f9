"""Stage `plan`: which configurations this run evaluates (the suite's
search space plus the champion's baseline), what the cache already holds,
and which engines are needed (tasks plan_configs, group_by_model)."""

from __future__ import annotations

import logging
from dataclasses import replace

from evaluation import registry, settings
from evaluation.candidates import Config, expand_configs
from evaluation.runstore import RunStore
from evaluation.stages.generate import cached_generations
from evaluation.stages.inputs import examples_for, probe_examples
from evaluation.suite import load_suite

log = logging.getLogger(__name__)


def _identify(name: str, source: dict, max_model_len: int) -> dict:
    from serving.endpoints import identify

    return identify(name, source, max_model_len=max_model_len)


def plan(suite_path: str, run_id: str | None = None) -> list[dict]:
    """The configurations to evaluate: the suite's configurations, each with
    its model's identity (weights content, tokenizer, template, output
    flags; or what a remote endpoint reports), plus the current champion's
    configuration as a baseline, served from the model it was registered
    with, so the comparison is on the same examples. Where the champion's
    recorded model is no longer available (gone, or changed under the same
    path or URL) no baseline is added and the reason is kept in the run's
    storage for the gate, which is then INCONCLUSIVE."""
    suite = load_suite(suite_path)
    idents = {c.name: _identify(c.name, c.source.model_dump(exclude_none=True), c.max_model_len)
              for c in suite.candidates}  # fmt: skip
    max_len = {c.name: c.max_model_len for c in suite.candidates}
    configs = []
    for c in expand_configs(suite):
        cfg = replace(c, model_identity=idents[c.model]["model_fingerprint"])
        configs.append(dict(cfg.to_json(), role="candidate", engine_key=c.model, max_model_len=max_len[c.model]))
    champ = registry.current_champion(suite.registered_model, settings.tracking_uri())
    baseline_problem = None
    if champ is not None:
        ids = {c["config_id"] for c in configs}
        if champ.config_id in ids:
            for c in configs:
                c["is_champion"] = c["config_id"] == champ.config_id
            log.info("champion v%s is one of this sweep's configurations", champ.version)
        else:
            baseline, baseline_problem = champion_baseline(champ, idents)
            if baseline is not None:
                configs.append(baseline)
                log.info("champion v%s (%s) is re-evaluated on this dataset as a baseline, served from its "
                         "recorded model", champ.version, Config.from_json(baseline).label)  # fmt: skip
            else:
                log.warning("champion v%s cannot be re-evaluated: %s; the gate can only be INCONCLUSIVE",
                            champ.version, baseline_problem)  # fmt: skip
    if run_id is not None:
        RunStore(run_id).write_json(RunStore.BASELINE, {"problem": baseline_problem})
    return configs


def champion_baseline(champ, idents: dict[str, dict]) -> tuple[dict | None, str | None]:
    """(the champion's configuration as a baseline, None), or (None, why it
    cannot be re-evaluated). It runs the champion's *recorded* model: the
    source it was registered with, checked to still have the recorded
    identity. Under the suite's own engine when that is the same model,
    else under an engine of its own (engine_key NAME@identity)."""
    cfg_json = champ.config
    name = cfg_json.get("model")
    source = cfg_json.get("model_source") or {}
    recorded = cfg_json.get("model_identity")
    if not name or not source:
        return None, f"v{champ.version} has no recorded model source"
    max_len = int(cfg_json.get("max_model_len") or 2048)
    if name in idents and recorded and idents[name]["model_fingerprint"] == recorded:
        engine_key, ident = name, idents[name]
    else:
        try:
            ident = _identify(name, source, max_len)
        except Exception as e:  # noqa: BLE001 - the reason goes to the gate
            return None, f"its recorded model {name!r} ({_describe(source)}) is not available: {e}"
        if recorded and ident["model_fingerprint"] != recorded:
            return None, (f"its recorded model {name!r} ({_describe(source)}) has changed since v{champ.version} "
                          f"was registered (identity {ident['model_fingerprint']}, recorded {recorded})")  # fmt: skip
        same_as_suite = name in idents and idents[name]["model_fingerprint"] == ident["model_fingerprint"]
        engine_key = name if same_as_suite else f"{name}@{ident['model_fingerprint'][-8:]}"
    keep = {k: v for k, v in cfg_json.items() if k not in ("model_source", "model_identity")}
    cfg = Config.from_json({**keep, "source": source, "model_identity": ident["model_fingerprint"]})
    return dict(cfg.to_json(), role="champion", is_champion=True, engine_key=engine_key, max_model_len=max_len), None


def _describe(source: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in source.items())


def annotate_missing(suite_path: str, configs: list[dict], identities: dict[str, dict]) -> dict:
    """Count each configuration's generations missing from the cache (0: it
    needs no engine)."""
    suite = load_suite(suite_path)
    dataset = examples_for(suite)
    dataset_ids = {ex.id for ex in dataset}
    examples = dataset + probe_examples(suite)
    for c in configs:
        hits, _ = cached_generations(Config.from_json(c), examples, identities[c["engine_key"]])
        c["missing"] = len(examples) - len(hits)
        c["missing_dataset"] = len(dataset_ids - set(hits))
    total = sum(c["missing"] for c in configs)
    log.info("%d configurations, %d generations missing from the cache", len(configs), total)
    from evaluation.stages.latency import mark_probes

    mark_probes(suite_path, configs, identities)
    return configs


def identities(configs: list[dict]) -> dict[str, dict]:
    """engine key -> the model's identity and engine version (no engine is
    started; fingerprints of local directories are memoized)."""
    out = {}
    for key, spec in models_of(configs).items():
        out[key] = _identify(spec["served_name"], spec["source"], spec["max_model_len"])
    return out


def batches_by_model(configs: list[dict]) -> list[dict]:
    """One generation batch per engine (a model name, or NAME@identity for a
    champion baseline served from another copy of the model): its
    configurations go to the engine together."""
    batches: dict[str, list[dict]] = {}
    for c in configs:
        batches.setdefault(c["engine_key"], []).append(c)
    return [{"model": m, "configs": cs} for m, cs in batches.items()]


def models_of(configs: list[dict]) -> dict[str, dict]:
    """Distinct engines to serve: engine key -> {served_name, source,
    max_model_len}."""
    return {
        c["engine_key"]: {"served_name": c["model"], "source": c["source"], "max_model_len": c["max_model_len"]}
        for c in configs
    }


def engines_needed(suite_path: str, configs: list[dict]) -> set[str]:
    """Models whose engine start_engines starts: those with generations
    missing from the cache, or latency to measure in this run. With successive halving only the dataset rows
    count (the bias probes are generated for survivors only; their engines
    start on demand)."""
    suite = load_suite(suite_path)
    key = "missing_dataset" if suite.search.strategy == "successive_halving" else "missing"
    return {c["engine_key"] for c in configs if c.get(key, c["missing"]) or c.get("probe")}
