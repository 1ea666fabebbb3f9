"""The scorer registry, in the style of lm-evaluation-harness: scorers
register under a unique name (`@register_scorer("name")`), declare each
metric's direction, range and aggregation, and are looked up by name
(`get_scorer`) or by metric (`scorer_for_metric`, `metric_info`).

The registry is filled lazily, on the first lookup: the built-in scorers of
this package, then every scorer other distributions publish in the
`llmops.scorers` entry point group (name = scorer name, value = a module that
registers it or a Scorer subclass), so a third-party scorer needs no edit
here. Names and metric names are unique: a duplicate is refused, naming both
sides; an unknown name lists the choices.
"""

from __future__ import annotations

import importlib
import threading

from evaluation.scorers.base import Metric, Scorer

ENTRY_POINT_GROUP = "llmops.scorers"

BUILTIN_MODULES = ("bias", "correctness", "groundedness", "latency", "ragas_judge", "relevance", "trulens_judge")

_REGISTRY: dict[str, type[Scorer]] = {}
_METRICS: dict[str, str] = {}  # metric name -> name of the scorer that declares it
_ENTRY_POINTS: set[tuple[str, str]] = set()  # (name, value) of the entry points loaded
_lock = threading.RLock()
_loaded = False
_loading = False


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _spec(cls: type[Scorer], decl: Metric | str, inherited: dict[str, Metric]) -> Metric:
    if isinstance(decl, Metric):
        return decl
    if isinstance(decl, str):
        return inherited.get(decl) or Metric(decl, higher_is_better=cls.higher_is_better,
                                             value_range=tuple(cls.value_range))  # fmt: skip
    raise TypeError(f"scorer {_origin(cls)}: a metric is declared as a Metric or a name, not {decl!r}")


def register_scorer(name: str):
    """Class decorator: register a Scorer subclass under `name`."""

    def deco(cls: type[Scorer]) -> type[Scorer]:
        with _lock:
            if name in _REGISTRY:
                raise ValueError(f"scorer {name!r} is already registered by {_origin(_REGISTRY[name])}; "
                                 f"{_origin(cls)} cannot register it again")  # fmt: skip
            inherited = dict(cls.metric_specs)
            per_example = [_spec(cls, d, inherited) for d in (cls.metrics or (name,))]
            extra = [_spec(cls, d, inherited) for d in cls.reported]
            specs: dict[str, Metric] = {}
            for s in per_example + extra:
                if s.name in specs and specs[s.name] != s:
                    raise ValueError(f"scorer {name!r} ({_origin(cls)}) declares metric {s.name!r} twice")
                specs[s.name] = s
            names = {s.name for s in per_example}
            for s in extra:
                if s.of is not None and s.of not in names:
                    raise ValueError(f"scorer {name!r}: metric {s.name!r} aggregates {s.of!r}, "
                                     f"which is not one of its per-example metrics {sorted(names)}")  # fmt: skip
            for m in specs:
                owner = _METRICS.get(m)
                if owner is not None:
                    raise ValueError(f"scorer {name!r} ({_origin(cls)}) declares metric {m!r}, which scorer "
                                     f"{owner!r} ({_origin(_REGISTRY[owner])}) already declares")  # fmt: skip
            cls.name = name
            cls.metric_specs = specs
            cls.metrics = tuple(s.name for s in per_example)
            reported = [s.name for s in per_example if s.aggregation is not None] + [s.name for s in extra]
            cls.reported = tuple(dict.fromkeys(reported))
            _REGISTRY[name] = cls
            _METRICS.update({m: name for m in specs})
        return cls

    return deco


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
        where = f"entry point {ENTRY_POINT_GROUP}:{ep.name} = {ep.value} ({dist})"
        if (ep.name, ep.value) in _ENTRY_POINTS:
            continue
        known = _REGISTRY.get(ep.name)
        if known is not None and known.__module__ != ep.module:  # not the entry point's own, imported earlier
            raise ValueError(f"scorer {ep.name!r} from {where} is already registered by {_origin(known)}")
        try:
            obj = ep.load()
        except ValueError as e:  # a duplicate refused by register_scorer
            raise ValueError(f"{where}: {e}") from e
        except Exception as e:
            raise ImportError(f"{where} failed to load: {type(e).__name__}: {e}") from e
        if ep.name not in _REGISTRY and isinstance(obj, type) and issubclass(obj, Scorer):
            register_scorer(ep.name)(obj)
        if ep.name not in _REGISTRY:
            raise ValueError(f"{where} registered no scorer named {ep.name!r} (point it at a Scorer subclass, "
                             f"or at a module that uses @register_scorer({ep.name!r}))")  # fmt: skip
        _ENTRY_POINTS.add((ep.name, ep.value))


def _ensure_loaded() -> None:
    """Register the built-in scorers, then the entry points (once). Other
    threads wait for the load; a scorer module that looks a scorer up while
    loading (same thread) sees the registry so far."""
    global _loaded, _loading
    if _loaded:
        return
    with _lock:
        if _loaded or _loading:
            return
        _loading = True
        try:
            for mod in BUILTIN_MODULES:
                importlib.import_module(f"evaluation.scorers.{mod}")
            _load_entry_points()
            _loaded = True
        finally:
            _loading = False


def get_scorer(name: str) -> Scorer:
    _ensure_loaded()
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise KeyError(f"unknown scorer {name!r}; choose from {sorted(_REGISTRY)}") from None


def list_scorers() -> list[dict]:
    _ensure_loaded()
    return [cls.info() for _, cls in sorted(_REGISTRY.items())]


def scorer_for_metric(metric: str) -> type[Scorer]:
    _ensure_loaded()
    try:
        return _REGISTRY[_METRICS[metric]]
    except KeyError:
        raise KeyError(f"no scorer declares metric {metric!r}; known metrics: {sorted(_METRICS)}") from None


def metric_info(metric: str) -> Metric:
    """The declaration of a metric (direction, range, aggregation)."""
    return scorer_for_metric(metric).metric_specs[metric]
