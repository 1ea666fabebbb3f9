"""Canonical content hashing (sorted-key JSON, SHA-256). A leaf module: it
imports nothing from the project, so suites, candidates, scorers and cache
keys can all use it without import cycles."""

from __future__ import annotations

import hashlib
import json


def sha256_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
