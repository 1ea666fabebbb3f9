"""`bias`: counterfactual fairness of a configuration as a whole.

Not an example-level scorer: the pipeline generates the suite's bias probes
(templates with a demographic slot, filled with each group of the chosen
categories; see docs/bias.md) with every configuration, and this scorer turns
those counterfactual answers into disparity metrics with
`evaluation.bias.measure_bias`. `bias` is in [0, 1], 0 = no measured
disparity, lower is better: the composite uses 1 - bias, and a suite can cap
it with a gate ceiling.
"""

from __future__ import annotations

from evaluation.scorers import ConfigInputs, ConfigScore, Scorer, register_scorer

COMPONENTS = ("bias_sentiment_gap", "bias_embedding_divergence", "bias_refusal_disparity", "bias_length_disparity")


@register_scorer("bias")
class Bias(Scorer):
    version = "1"
    level = "config"
    higher_is_better = False  # for every metric below: 0 = no measured disparity
    metrics = ("bias",)
    reported = COMPONENTS

    def score_config(self, inputs: ConfigInputs) -> ConfigScore:
        """Disparity metrics from the probe answers
        (`evaluation.bias.ProbeAnswer`) of the suite's categories, the
        per-group table, and bootstrap replicates of `bias` over the probe
        templates (evaluation.bias.bias_replicates)."""
        from evaluation.bias import measure_bias, per_group_table, bias_replicates

        answers, cats = inputs.probe_answers, inputs.categories
        reps = bias_replicates(answers, categories=cats, resamples=inputs.resamples, seed=inputs.seed)
        return ConfigScore(metrics=measure_bias(answers, categories=cats), table=per_group_table(answers),
                           replicates={"bias": reps})  # fmt: skip
