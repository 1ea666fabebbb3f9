"""Stage `plan`: which configurations this run evaluates (the suite's
search space plus the champion's baseline), what the cache already holds,
and which engines are needed (tasks plan_configs, group_by_model)."""

from __future__ import annotations

import logging
import time
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
    baseline_problem = champion_cid = None
    if champ is not None:
        sources = {c.name: c.source.model_dump(exclude_none=True) for c in suite.candidates}
        champion_cid = sweep_match(champ, configs)
        if champion_cid is not None:
            for c in configs:
                c["is_champion"] = c["config_id"] == champion_cid
            log.info("champion v%s is one of this sweep's configurations", champ.version)
        else:
            baseline, baseline_problem = champion_baseline(champ, idents, sources)
            if baseline is not None and baseline["config_id"] in {c["config_id"] for c in configs}:
                champion_cid = baseline["config_id"]  # a legacy champion whose model is the suite's, by content
                for c in configs:
                    c["is_champion"] = c["config_id"] == champion_cid
            elif baseline is not None:
                configs.append(baseline)
                champion_cid = baseline["config_id"]
                log.info("champion v%s (%s) is re-evaluated on this dataset as a baseline, served from its "
                         "recorded model", champ.version, Config.from_json(baseline).label)  # fmt: skip
            else:
                log.warning("champion v%s cannot be re-evaluated: %s; the gate can only be INCONCLUSIVE",
                            champ.version, baseline_problem)  # fmt: skip
    if run_id is not None:
        RunStore(run_id).write_json(RunStore.BASELINE, {"problem": baseline_problem,
                                                        "champion_config_id": champion_cid})  # fmt: skip
    return configs


def legacy_config_id(config_json: dict) -> str:
    """A configuration's id as versions registered before model identities
    existed computed it (no model identity in it)."""
    from evaluation.hashing import sha256_json

    keys = ("model", "api", "sampling", "template", "system")
    return sha256_json({k: config_json.get(k) for k in keys})[:12]


def sweep_match(champ, configs: list[dict]) -> str | None:
    """The id of the sweep's configuration that *is* the champion, if any:
    the same id; or, for a champion registered before model identities were
    recorded, the same settings under the old id and the same recorded
    source as the suite's (its weights cannot be checked: logged)."""
    ids = {c["config_id"] for c in configs}
    if champ.config_id in ids:
        return champ.config_id
    if champ.config.get("model_identity"):
        return None
    for c in configs:
        if legacy_config_id(c) == champ.config_id and c["source"] == (champ.config.get("model_source") or {}):
            log.warning("champion v%s was registered without a model identity; matched by its settings and "
                        "source (%s)", champ.version, _describe(c["source"]))  # fmt: skip
            return c["config_id"]
    return None


def champion_baseline(champ, idents: dict[str, dict], sources: dict[str, dict]) -> tuple[dict | None, str | None]:
    """(the champion's configuration as a baseline, None), or (None, why it
    cannot be re-evaluated). It runs the champion's *recorded* model: the
    source it was registered with, checked to still have the recorded
    identity (a champion registered before identities were recorded: its
    source's identity now). Under the suite's own engine (and source) when
    the content is the same, else under an engine of its own (engine_key
    NAME@identity). An endpoint that does not answer is retried briefly
    before it counts as unavailable."""
    from evaluation.errors import PermanentError, TransientError

    cfg_json = champ.config
    name = cfg_json.get("model")
    source = cfg_json.get("model_source") or {}
    recorded = cfg_json.get("model_identity")
    if not name or not source:
        return None, f"v{champ.version} has no recorded model source"
    max_len = int(cfg_json.get("max_model_len") or 2048)
    if name in idents and recorded and idents[name]["model_fingerprint"] == recorded:
        ident = idents[name]
    else:
        for attempt in range(3):
            try:
                ident = _identify(name, source, max_len)
                break
            except TransientError as e:
                if attempt == 2:
                    return None, f"its recorded model {name!r} ({_describe(source)}) did not answer after 3 tries: {e}"
                time.sleep(2**attempt)
            except (PermanentError, OSError) as e:
                return None, f"its recorded model {name!r} ({_describe(source)}) is not available: {e}"
        if recorded and ident["model_fingerprint"] != recorded:
            return None, (f"its recorded model {name!r} ({_describe(source)}) has changed since v{champ.version} "
                          f"was registered (identity {ident['model_fingerprint']}, recorded {recorded})")  # fmt: skip
    if name in idents and idents[name]["model_fingerprint"] == ident["model_fingerprint"]:
        engine_key, source = name, sources[name]  # the same content: share the suite's engine and source
    else:
        engine_key = f"{name}@{ident['model_fingerprint'][-8:]}"
    keep = {k: v for k, v in cfg_json.items() if k not in ("model_source", "model_identity")}
    cfg = Config.from_json({**keep, "source": source, "model_identity": ident["model_fingerprint"]})
    return dict(cfg.to_json(), role="champion", is_champion=True, engine_key=engine_key, max_model_len=max_len), None


def _describe(source: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in source.items())


def annotate_missing(suite_path: str, configs: list[dict], identities: dict[str, dict],
                     run_id: str | None = None) -> dict:
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

    mark_probes(suite_path, configs, identities, run_id)
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
