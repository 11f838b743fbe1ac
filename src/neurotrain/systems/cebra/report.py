"""The project report's rows of this system: headline metrics beside their bar and reference."""

from __future__ import annotations

from neurotrain.reports.index import Metrics, row


def headline(m: Metrics) -> list[dict]:
    """Rows from ``metrics.json``; rows needing ground truth or annotations are left out on real data."""
    if m.has("consistency_min") and m["consistency_min"] is not None:
        rows = [row("cross-session consistency (min over pairs)", m["consistency_min"],
                     f">= {m['quality.min_consistency']:g}", f"mean {m['consistency_mean']:.3f}",
                     m["quality.consistency_passes"])]
    else:
        rows = [row("cross-session consistency", "n/a", f">= {m['quality.min_consistency']:g}",
                     m.get("quality.note", ""), None)]
    if m.has("reconstruction_r2_min", "raw_reconstruction_r2", "quality.min_reconstruction"):  # embedded: true latent
        rows.append(row("reconstruction R^2 of the true latent (min over sessions)", m["reconstruction_r2_min"],
                         f">= {m['quality.min_reconstruction']:g}",
                         f"ground truth; raw spikes {min(m['raw_reconstruction_r2']):.3f}",
                         m["quality.reconstruction_passes"]))
    rows.append(row("behaviour decoding R^2 (kNN, mean over sessions)", m["decoding_r2_mean"], "",
                     f"raw spikes {m['raw_decoding_r2_mean']:.3f}"))
    return rows


def verdict(m: Metrics) -> bool | None:
    """The system's quality bar: passed, failed, or None where it cannot be scored."""
    return m["quality.passes"]
