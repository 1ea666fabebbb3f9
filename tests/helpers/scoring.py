"""A configuration for scorer unit tests: scorers only read its identity."""

from __future__ import annotations

from evaluation.candidates import Config, SamplingParams

UNIT_CONFIG = Config(
    model="unit-model",
    api="chat",
    sampling=SamplingParams(0.0, 1.0, -1, 64, 1234),
    template_name="plain",
    template="{context}\n{question}",
)
