"""The project report's rows of this system: headline metrics beside their bar and reference."""

from __future__ import annotations

from neurotrain.reports.index import Metrics, row


def headline(m: Metrics) -> list[dict]:
    """Rows from ``metrics.json``; rows needing ground truth or annotations are left out on real data."""
    need = m["quality.required_fraction_of_noise_ceiling"]
    ok = m["quality.correlation_passes"]
    rows = [row("PSTH correlation, test trials", m["mean_correlation"], f">= {need:g} x noise ceiling",
                 f"noise ceiling {m['noise_ceiling']:.3f} (split-half)", ok),
            row("fraction of the noise ceiling", m["fraction_of_noise_ceiling"], f">= {need:g}", "1 = ceiling", ok)]
    if m.has("mean_correlation_with_true_rates"):  # embedded data: the teacher's rates
        rows.append(row("correlation with the teacher's true rates", m["mean_correlation_with_true_rates"], "",
                         "ground truth (embedded teacher)"))
    rows.append(row("Dale's-law violations", m["dale_violations"], "0", "", m["quality.dale_passes"], spec="d"))
    return rows


def verdict(m: Metrics) -> bool | None:
    """The system's quality bar: passed, failed, or None where it cannot be scored."""
    return m["quality.passes"]
