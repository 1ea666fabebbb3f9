"""Stage `validate`: the suite and its dataset are checked before any
expensive work (tasks validate_suite and validate_dataset)."""

from __future__ import annotations

import logging

from evaluation import settings
from evaluation.cache import ResultCache
from evaluation.candidates import expand_configs
from evaluation.dataset import dataset_digest
from evaluation.keys import VALIDATIONS, validation_key
from evaluation.stages.inputs import examples_for
from evaluation.suite import load_suite

log = logging.getLogger(__name__)


def check_suite(suite_path: str) -> dict:
    suite = load_suite(suite_path)
    configs = expand_configs(suite)
    log.info("suite %s (%s): %d candidate configurations", suite.name, suite.digest, len(configs))
    return {"name": suite.name, "digest": suite.digest, "configs": len(configs), "path": suite.source_path}


def check_dataset(suite_path: str) -> dict:
    from evaluation.dataset import validate_dataset

    suite = load_suite(suite_path)
    ds = suite.dataset
    bounds = {"min_question_chars": ds.min_question_chars, "max_question_chars": ds.max_question_chars,
              "max_context_chars": ds.max_context_chars}  # fmt: skip
    # Structure is checked on every run (cheap); the Great Expectations run
    # (about 5 s of imports) only once per dataset content and bounds.
    cache = ResultCache(settings.cache_uri())
    key = validation_key(dataset_digest(examples_for(suite)), bounds)
    summary = cache.get(VALIDATIONS, key)
    if summary is None:
        summary = validate_dataset(suite.dataset_path, limit=ds.limit, **bounds)
        cache.put(VALIDATIONS, key, summary)
    log.info("dataset %s: %d rows valid (digest %s)", suite.dataset_path, summary["rows"], summary["digest"])
    return summary
