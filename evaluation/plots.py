"""Promotion report plot: paired differences with confidence intervals."""

from __future__ import annotations

import math
from pathlib import Path


def forest_plot(comparisons: list[dict], path: str | Path, *, title: str, margin: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in comparisons if not math.isnan(c["diff"])]
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(len(rows), 1) + 1.4))
    for i, c in enumerate(rows):
        color = "tab:green" if c["ci_low"] > 0 else ("tab:red" if c["ci_high"] < 0 else "tab:gray")
        ax.errorbar(c["diff"], i, xerr=[[c["diff"] - c["ci_low"]], [c["ci_high"] - c["diff"]]], fmt="o",
                    color=color, capsize=4)  # fmt: skip
        p = c.get("p_adjusted") if c.get("p_adjusted") is not None else c["p_value"]
        ax.annotate(f"p(better)={p:.3f}  n={c['n']}", (c["ci_high"], i), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    if margin:
        ax.axvline(margin, color="tab:blue", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [c["metric"] + ("" if c["higher_is_better"] else " (lower=better)") for c in rows])
    note = f"; dashed: composite margin {margin}" if margin else ""
    ax.set_xlabel(f"challenger - champion (positive = challenger better), bootstrap CI{note}", fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
