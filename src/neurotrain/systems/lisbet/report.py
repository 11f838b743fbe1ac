"""The project report's rows of this system: headline metrics beside their bar and reference."""

from __future__ import annotations

from neurotrain.reports.index import Metrics, row


def headline(m: Metrics) -> list[dict]:
    """Rows from ``metrics.json``; rows needing ground truth or annotations are left out on real data."""
    if not m.has("macro_f1_embedding", "macro_f1_raw"):  # no behaviour annotations
        return [row("behaviour macro F1", "n/a", "> raw-keypoint baseline", m.get("quality.note", ""), None)]
    lo, hi = m["macro_f1_margin_ci95"]
    rows = [row("behaviour macro F1, embedding (linear, held-out sequences)", m["macro_f1_embedding"],
                f">= {m['quality.min_macro_f1']:g}" if m.has("quality.min_macro_f1") else "", "",
                m.get("quality.level_passes")),
            row("margin over the raw-keypoint baseline", m["macro_f1_margin"], "95% interval above 0",
                f"raw keypoints {m['macro_f1_raw']:.3f}; interval {lo:.3f} to {hi:.3f}",
                m["quality.embedding_beats_raw"])]
    if m.has("quality.max_raw_f1"):  # the generator's check, on the embedded data only
        rows.append(row("behaviour macro F1, raw keypoints", m["macro_f1_raw"],
                        f"<= {m['quality.max_raw_f1']:g} (not trivial)", "baseline", m["quality.raw_below_max"]))
    return rows


def verdict(m: Metrics) -> bool | None:
    """The system's quality bar: passed, failed, or None where it cannot be scored."""
    return m["quality.passes"]
