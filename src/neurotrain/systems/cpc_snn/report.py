"""The project report's rows of this system: headline metrics beside their bar and reference."""

from __future__ import annotations

from neurotrain.reports.index import Metrics, row


def headline(m: Metrics) -> list[dict]:
    """Rows from ``metrics.json``; rows needing ground truth or annotations are left out on real data."""
    fap, need = m["metrics.quality_bar.fap"], m["metrics.quality_bar.required_ratio"]
    passed = m["metrics.quality_bar.passed"]
    return [
        row(f"SNN true-positive rate at FAP {fap:g}", m["metrics.quality_bar.tpr_snn"], f">= {need:g} x matched filter",
            f"matched filter {m['metrics.quality_bar.tpr_mf']:.3f}", passed),
        row("SNN / matched-filter ratio", m["metrics.quality_bar.ratio"], f">= {need:g}", "1 = optimal detector", passed),
        row(f"matched-filter TPR at FAP {fap:g}", m["metrics.quality_bar.tpr_mf"], "in [0.5, 0.9] (a ceiling that misses)",
            "optimal in Gaussian noise", m["metrics.quality_bar.mf_in_range"]),
        row("ROC AUC, SNN", m["metrics.auc_snn"], "", f"matched filter {m['metrics.auc_mf']:.3f}"),
    ]


def verdict(m: Metrics) -> bool | None:
    """The system's quality bar: passed, failed, or None where it cannot be scored."""
    return m["metrics.quality_bar.passed"]


def curves(run_dir) -> dict:
    """Curves to pool over a run's seeds (:mod:`neurotrain.reports.aggregate`): detection
    efficiency against injected SNR at the bar's FAP (``metrics/efficiency.npy``), SNN and matched
    filter."""
    from pathlib import Path

    from neurotrain.io import load_json, load_npy

    run = Path(run_dir)
    eff = load_npy(run / "metrics" / "efficiency.npy")
    fap = load_json(run / "metrics.json")["metrics"]["quality_bar"]["fap"]
    return {"efficiency_vs_snr": {"title": "efficiency vs SNR", "xlabel": "injected network SNR",
                                  "ylabel": f"detection efficiency at FAP {fap:g}", "x": eff[:, 0].tolist(),
                                  "y": {"SNN": eff[:, 1].tolist(), "matched filter": eff[:, 2].tolist()}}}
