"""NaN-safe values for Airflow XComs and stored records (strict JSON has no
NaN or infinity): non-finite floats travel as None and metrics are turned
back into NaN by the reader. NaN means "not scored"."""

from __future__ import annotations

import math


def dump_nan(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: dump_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [dump_nan(v) for v in obj]
    return obj


def load_metrics(metrics: dict) -> dict[str, float]:
    return {k: math.nan if v is None else float(v) for k, v in metrics.items()}
