"""The project report ``results/report.md``: one index over every system's run.

For each system: its headline metrics beside the quality bar its issue sets and the reference
that bounds them (noise ceiling, matched filter, ground truth, raw-data baseline, untrained
network), the verdict, the training time, and links to its report and figures. Everything is
read from the saved artifacts (``metrics.json``, ``model/training_log.json``, ``figures/``); a
system whose artifacts are missing or lack a field is an error naming the file and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jinja2

from ..errors import NeurotrainError
from ..io import load_json, save_text
from .render import TEMPLATES


class _Metrics:
    """``metrics.json`` with lookups that name the file and key when a field is missing."""

    def __init__(self, path: Path):
        self.path, self.data = path, load_json(path)

    def __getitem__(self, dotted: str):
        node = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise NeurotrainError(self.path, f"has no key {dotted!r}; rerun analyze_population")
            node = node[part]
        return node


def _row(metric: str, value, bar: str, reference: str = "", passes: bool | None = None, fmt: str = ".3f") -> dict:
    return {"metric": metric, "value": format(value, fmt) if isinstance(value, (int, float)) else str(value),
            "bar": bar, "reference": reference, "passes": passes}


def _ei_rnn(m: _Metrics) -> list[dict]:
    q = m["quality"]
    need = q["required_fraction_of_noise_ceiling"]
    return [
        _row("PSTH correlation, validation trials", m["mean_correlation"], f">= {need:g} x noise ceiling",
             f"noise ceiling {m['noise_ceiling']:.3f} (split-half)", q["correlation_passes"]),
        _row("fraction of the noise ceiling", m["fraction_of_noise_ceiling"], f">= {need:g}", "1 = ceiling",
             q["correlation_passes"]),
        _row("correlation with the teacher's true rates", m["mean_correlation_with_true_rates"], "",
             "ground truth (embedded teacher)"),
        _row("Dale's-law violations", m["dale_violations"], "0", "", q["dale_passes"], fmt="d"),
    ]


def _cebra(m: _Metrics) -> list[dict]:
    q = m["quality"]
    return [
        _row("cross-session consistency (min over pairs)", m["consistency_min"], f">= {q['min_consistency']:g}",
             f"mean {m['consistency_mean']:.3f}", q["consistency_passes"]),
        _row("reconstruction R^2 of the true latent (min over sessions)", m["reconstruction_r2_min"],
             f">= {q['min_reconstruction']:g}",
             f"ground truth; raw spikes {min(m['raw_reconstruction_r2']):.3f}", q["reconstruction_passes"]),
        _row("behaviour decoding R^2 (kNN, mean over sessions)", m["decoding_r2_mean"], "",
             f"raw spikes {m['raw_decoding_r2_mean']:.3f}"),
    ]


def _ring_attractor(m: _Metrics) -> list[dict]:
    q = m["quality"]
    return [
        _row("heading tracking error, median (deg)", m["tracking_error_median_deg"],
             f"<= {q['max_tracking_error_deg']:g}", f"untrained {m['tracking_error_init_median_deg']:.2f}",
             q["tracking_passes"], fmt=".2f"),
        _row("bump drift in darkness (deg/s)", m["drift_mean_deg_per_s"], f"<= {q['max_drift_deg_per_s']:g}",
             f"untrained {m['drift_init_mean_deg_per_s']:.2f}", q["drift_passes"], fmt=".2f"),
        _row("parameters outside their biological ranges", m["constraint_violations"],
             "0", "", q["constraints_pass"], fmt="d"),
    ]


def _lisbet(m: _Metrics) -> list[dict]:
    q = m["quality"]
    return [
        _row("behaviour macro F1, embedding (linear, held-out sequences)", m["macro_f1_embedding"],
             "> raw-keypoint baseline", f"raw keypoints {m['macro_f1_raw']:.3f}", q["embedding_beats_raw"]),
        _row("behaviour macro F1, raw keypoints", m["macro_f1_raw"], f"<= {q['max_raw_f1']:g} (not trivial)",
             "baseline", q["raw_below_max"]),
    ]


def _cpc_snn(m: _Metrics) -> list[dict]:
    b = m["metrics.quality_bar"]
    rows = [
        _row(f"SNN true-positive rate at FAP {b['fap']:g}", b["tpr_snn"],
             f">= {b['required_ratio']:g} x matched filter", f"matched filter {b['tpr_mf']:.3f}", b["passed"]),
        _row("SNN / matched-filter ratio", b["ratio"], f">= {b['required_ratio']:g}", "1 = optimal detector", b["passed"]),
        _row(f"matched-filter TPR at FAP {b['fap']:g}", b["tpr_mf"], "in [0.5, 0.9] (a ceiling that misses)",
             "optimal in Gaussian noise", b["mf_in_range"]),
        _row("ROC AUC, SNN", m["metrics.auc_snn"], "", f"matched filter {m['metrics.auc_mf']:.3f}"),
    ]
    return rows


HEADLINES: dict[str, Callable[[_Metrics], list[dict]]] = {
    "ei_rnn": _ei_rnn, "cebra": _cebra, "ring_attractor": _ring_attractor, "lisbet": _lisbet, "cpc_snn": _cpc_snn,
}
TITLES = {"ei_rnn": "Dale's-law E-I RNN fitted to PSTHs", "cebra": "CEBRA multi-session embedding",
          "ring_attractor": "Ring-attractor head-direction network", "lisbet": "LISBET social-behaviour transformer",
          "cpc_snn": "CPC + spiking gravitational-wave detector"}


def _passes(m: _Metrics, system: str) -> bool:
    return bool(m["metrics.quality_bar.passed"] if system == "cpc_snn" else m["quality.passes"])


def system_entry(system: str, results: Path) -> dict:
    run = results / system
    if system not in HEADLINES:
        raise NeurotrainError(f"system {system!r}", "unknown system")
    for need in ("metrics.json", "model/training_log.json", "training_report.md"):
        if not (run / need).is_file():
            raise NeurotrainError(run / need, "missing; build this system's chain first")
    m = _Metrics(run / "metrics.json")
    log = load_json(run / "model" / "training_log.json")
    seconds = log.get("summary", {}).get("training_time_s")
    if not isinstance(seconds, (int, float)):
        raise NeurotrainError(run / "model" / "training_log.json", "has no summary.training_time_s")
    return {"system": system, "title": TITLES[system], "rows": HEADLINES[system](m), "passes": _passes(m, system),
            "training_time_s": float(seconds), "report": f"{system}/training_report.md",
            "figures": [f"{system}/figures/{p.name}" for p in sorted((run / "figures").glob("*.png"))]}


def render_index(systems: list[str], results_dir: str | Path, out: str | Path) -> Path:
    """Write the project report (``results/report.md``) over ``systems``' finished runs."""
    results = Path(results_dir)
    entries = [system_entry(s, results) for s in systems]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["duration"] = lambda s: f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"
    text = env.get_template("index.md.j2").render(entries=entries, n_pass=sum(e["passes"] for e in entries))
    out = Path(out)
    save_text(out, text)
    return out
