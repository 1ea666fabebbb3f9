"""Terminal rendering of a run's report: the leaderboard, the answers that
look like prompt injections, and the decision."""

from __future__ import annotations

import math

COLUMNS = [
    ("rank", "#", "{:d}"),
    ("model", "model", "{}"),
    ("template", "template", "{}"),
    ("sampling", "sampling", "{}"),
    ("relevance", "relev", "{:.3f}"),
    ("groundedness", "ground", "{:.3f}"),
    ("correctness", "correct", "{:.3f}"),
    ("bias", "bias", "{:.3f}"),
    ("trulens_answer_relevance", "tl.ans", "{:.2f}"),
    ("trulens_context_relevance", "tl.ctx", "{:.2f}"),
    ("trulens_groundedness", "tl.gnd", "{:.2f}"),
    ("ragas_faithfulness", "rg.faith", "{:.2f}"),
    ("ragas_response_relevancy", "rg.rel", "{:.2f}"),
    ("ragas_context_precision", "rg.prec", "{:.2f}"),
    ("judge_error_rate", "judge err", "{:.0%}"),
    ("latency_e2e_p50_s", "p50 s", "{:.2f}"),
    ("latency_e2e_p95_s", "p95 s", "{:.2f}"),
    ("failed_rate", "failed", "{:.0%}"),
    ("composite", "composite", "{:.4f}"),
]


def _cell(fmt: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-" if fmt == "{:d}" else "n/a"
    return fmt.format(v)


def format_leaderboard(rows: list[dict]) -> str:
    """Only the columns some row has (judge and bias columns appear when
    those scorers ran)."""
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    left = {i for i, c in enumerate(cols) if c[0] in ("model", "template", "sampling")} | {len(cols)}
    table = [[h for _, h, _ in cols] + ["note"]]
    for r in rows:
        note = r.get("note", "") if r.get("eligible", True) or r.get("dropped") else "ineligible: " + r.get("note", "")
        table.append([_cell(f, r.get(k)) for k, _, f in cols] + [note])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for j, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_comparison(rows: list[dict], confidence: float = 0.95) -> str:
    head = ["metric", "challenger", "champion", "diff", f"{confidence:.0%} CI", "p (1-sided)", "d_z", "n"]
    table = [head]
    for c in rows:
        p = c.get("p_adjusted") if c.get("p_adjusted") is not None else c.get("p_value")
        table.append([
            c["metric"] + ("" if c.get("higher_is_better", True) else " (lower better)"),
            _cell("{:.4f}", c.get("challenger_mean")), _cell("{:.4f}", c.get("champion_mean")),
            _cell("{:+.4f}", c.get("diff")),
            f"[{_cell('{:+.4f}', c.get('ci_low'))}, {_cell('{:+.4f}', c.get('ci_high'))}]",
            _cell("{:.4f}", p) + (" Holm" if c.get("p_adjusted") is not None else ""),
            _cell("{:.2f}", c.get("effect_size")), str(c.get("n")),
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths))) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_suspected(suspected: dict[str, list[str]], leaderboard: list[dict]) -> list[str]:
    """Per configuration, the example ids whose answer looks like a prompt
    injection (evaluation.hygiene.injection_markers). They are scored like
    any other answer; their judge verdicts deserve a look."""
    if not suspected:
        return ["Suspected prompt injections: none"]
    label = {r["config_id"]: f"{r.get('model', '')} {r.get('template', '')} {r.get('sampling', '')}".strip()
             for r in leaderboard}  # fmt: skip
    out = [f"Suspected prompt injections ({sum(map(len, suspected.values()))} answers; scored as usual, "
           "check their judge verdicts in per_example.json):"]  # fmt: skip
    for cid, ids in sorted(suspected.items()):
        out.append(f"  {cid}" + (f" ({label[cid]})" if label.get(cid) else "") + ": " + ", ".join(ids))
    return out


def format_report(rep: dict) -> str:
    d = rep["decision"]
    before = rep.get("aliases_before") or {}
    after = rep.get("aliases") or {}
    moved = [f"{a}: {f'v{before[a]}' if a in before else '-'} -> v{after[a]}" for a in sorted(after) if before.get(a) != after[a]]
    out = [
        "",
        f"Suite {rep['suite']}  |  dataset {rep['dataset']['rows']} rows (digest {rep['dataset']['digest']})  |  Airflow run {rep['airflow_run_id']}",
        "",
        format_leaderboard(rep["leaderboard"]),
        "",
        *format_suspected(rep.get("suspected_injections") or {}, rep["leaderboard"]),
        "",
        *(["Paired comparison with the champion (positive diff = challenger better):",
           format_comparison(rep["comparison"]), ""] if rep.get("comparison") else []),
        f"Decision: {d['outcome']}" + (f" (registered {rep['registered_model']} v{rep['version']})" if rep.get("version") else ""),
        *[f"  - {r}" for r in d["reasons"]],
        "Aliases: " + (", ".join(f"{a}=v{v}" for a, v in sorted(after.items())) or "none"),
        *([f"  moved: {m}" for m in moved] or ["  no alias moved"]),
        "",
        f"MLflow: {rep['tracking_uri']}  experiment '{rep['experiment']}' (id {rep['experiment_id']}), parent run {rep['parent_run_id']}",
        "Open the UI with `make ui` (MLflow on http://127.0.0.1:5000).",
    ]
    return "\n".join(out)
