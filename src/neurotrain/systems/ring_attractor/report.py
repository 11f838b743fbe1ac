"""The project report's rows of this system: headline metrics beside their bar and reference."""

from __future__ import annotations

from neurotrain.reports.index import Metrics, row


def headline(m: Metrics) -> list[dict]:
    """Rows from ``metrics.json``; rows needing ground truth or annotations are left out on real data."""
    return [
        row("heading tracking error, median (deg)", m["tracking_error_median_deg"],
            f"<= {m['quality.max_tracking_error_deg']:g}", f"untrained {m['tracking_error_init_median_deg']:.2f}",
            m["quality.tracking_passes"], spec=".2f"),
        row("bump drift in darkness (deg/s)", m["drift_mean_deg_per_s"], f"<= {m['quality.max_drift_deg_per_s']:g}",
            f"untrained {m['drift_init_mean_deg_per_s']:.2f}", m["quality.drift_passes"], spec=".2f"),
        row("parameters outside their biological ranges", m["constraint_violations"], "0", "",
            m["quality.constraints_pass"], spec="d"),
    ]


def verdict(m: Metrics) -> bool | None:
    """The system's quality bar: passed, failed, or None where it cannot be scored."""
    return m["quality.passes"]
