"""The project report ``results/report.md``: one index over every system's run.

For each system: its headline metrics beside the quality bar its issue sets and the reference
that bounds them (noise ceiling, matched filter, ground truth, raw-data baseline, untrained
network), the verdict, the training time, and links to its report and figures. Everything is
read from the saved artifacts (``metrics.json``, ``model/training_log.json``, ``figures/``).
Rows that need ground truth or annotations (embedded data) are left out on real data, and a
bar that cannot be scored there reads "n/a"; a required field that is missing is an error
naming the file and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import NeurotrainError
from ..io import load_json, save_text
from .render import environment, fmt

_MISSING = object()


class _Metrics:
    """``metrics.json`` with dotted lookups: ``m["a.b"]`` names the file and key when missing,
    ``m.get("a.b")`` returns None."""

    def __init__(self, path: Path):
        self.path, self.data = path, load_json(path)

    def get(self, dotted: str, default=None):
        node = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def __getitem__(self, dotted: str):
        value = self.get(dotted, _MISSING)
        if value is _MISSING:
            raise NeurotrainError(self.path, f"has no key {dotted!r}; rerun analyze_population")
        return value

    def has(self, *dotted: str) -> bool:
        return all(self.get(d, _MISSING) is not _MISSING for d in dotted)


def _row(metric: str, value, bar: str = "", reference: str = "", passes: bool | None = None, spec: str = ".3f") -> dict:
    return {"metric": metric, "value": fmt(value, spec), "bar": bar, "reference": reference, "passes": passes}


def _ei_rnn(m: _Metrics) -> list[dict]:
    need = m["quality.required_fraction_of_noise_ceiling"]
    ok = m["quality.correlation_passes"]
    rows = [_row("PSTH correlation, validation trials", m["mean_correlation"], f">= {need:g} x noise ceiling",
                 f"noise ceiling {m['noise_ceiling']:.3f} (split-half)", ok),
            _row("fraction of the noise ceiling", m["fraction_of_noise_ceiling"], f">= {need:g}", "1 = ceiling", ok)]
    if m.has("mean_correlation_with_true_rates"):  # embedded data: the teacher's rates
        rows.append(_row("correlation with the teacher's true rates", m["mean_correlation_with_true_rates"], "",
                         "ground truth (embedded teacher)"))
    rows.append(_row("Dale's-law violations", m["dale_violations"], "0", "", m["quality.dale_passes"], spec="d"))
    return rows


def _cebra(m: _Metrics) -> list[dict]:
    rows = [_row("cross-session consistency (min over pairs)", m["consistency_min"],
                 f">= {m['quality.min_consistency']:g}", f"mean {m['consistency_mean']:.3f}",
                 m["quality.consistency_passes"])]
    if m.has("reconstruction_r2_min", "raw_reconstruction_r2", "quality.min_reconstruction"):  # embedded: true latent
        rows.append(_row("reconstruction R^2 of the true latent (min over sessions)", m["reconstruction_r2_min"],
                         f">= {m['quality.min_reconstruction']:g}",
                         f"ground truth; raw spikes {min(m['raw_reconstruction_r2']):.3f}",
                         m["quality.reconstruction_passes"]))
    rows.append(_row("behaviour decoding R^2 (kNN, mean over sessions)", m["decoding_r2_mean"], "",
                     f"raw spikes {m['raw_decoding_r2_mean']:.3f}"))
    return rows


def _ring_attractor(m: _Metrics) -> list[dict]:
    return [
        _row("heading tracking error, median (deg)", m["tracking_error_median_deg"],
             f"<= {m['quality.max_tracking_error_deg']:g}", f"untrained {m['tracking_error_init_median_deg']:.2f}",
             m["quality.tracking_passes"], spec=".2f"),
        _row("bump drift in darkness (deg/s)", m["drift_mean_deg_per_s"], f"<= {m['quality.max_drift_deg_per_s']:g}",
             f"untrained {m['drift_init_mean_deg_per_s']:.2f}", m["quality.drift_passes"], spec=".2f"),
        _row("parameters outside their biological ranges", m["constraint_violations"], "0", "",
             m["quality.constraints_pass"], spec="d"),
    ]


def _lisbet(m: _Metrics) -> list[dict]:
    if not m.has("macro_f1_embedding", "macro_f1_raw"):  # no behaviour annotations
        return [_row("behaviour macro F1", "n/a", "> raw-keypoint baseline", m.get("quality.note", ""), None)]
    return [
        _row("behaviour macro F1, embedding (linear, held-out sequences)", m["macro_f1_embedding"],
             "> raw-keypoint baseline", f"raw keypoints {m['macro_f1_raw']:.3f}", m["quality.embedding_beats_raw"]),
        _row("behaviour macro F1, raw keypoints", m["macro_f1_raw"], f"<= {m['quality.max_raw_f1']:g} (not trivial)",
             "baseline", m["quality.raw_below_max"]),
    ]


def _cpc_snn(m: _Metrics) -> list[dict]:
    fap, need = m["metrics.quality_bar.fap"], m["metrics.quality_bar.required_ratio"]
    passed = m["metrics.quality_bar.passed"]
    return [
        _row(f"SNN true-positive rate at FAP {fap:g}", m["metrics.quality_bar.tpr_snn"], f">= {need:g} x matched filter",
             f"matched filter {m['metrics.quality_bar.tpr_mf']:.3f}", passed),
        _row("SNN / matched-filter ratio", m["metrics.quality_bar.ratio"], f">= {need:g}", "1 = optimal detector", passed),
        _row(f"matched-filter TPR at FAP {fap:g}", m["metrics.quality_bar.tpr_mf"], "in [0.5, 0.9] (a ceiling that misses)",
             "optimal in Gaussian noise", m["metrics.quality_bar.mf_in_range"]),
        _row("ROC AUC, SNN", m["metrics.auc_snn"], "", f"matched filter {m['metrics.auc_mf']:.3f}"),
    ]


HEADLINES: dict[str, Callable[[_Metrics], list[dict]]] = {
    "ei_rnn": _ei_rnn, "cebra": _cebra, "ring_attractor": _ring_attractor, "lisbet": _lisbet, "cpc_snn": _cpc_snn,
}
TITLES = {"ei_rnn": "Dale's-law E-I RNN fitted to PSTHs", "cebra": "CEBRA multi-session embedding",
          "ring_attractor": "Ring-attractor head-direction network", "lisbet": "LISBET social-behaviour transformer",
          "cpc_snn": "CPC + spiking gravitational-wave detector"}


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
    passes = m["metrics.quality_bar.passed"] if system == "cpc_snn" else m["quality.passes"]
    return {"system": system, "title": TITLES[system], "rows": HEADLINES[system](m), "passes": passes,
            "training_time_s": float(seconds), "report": f"{system}/training_report.md",
            "figures": [f"{system}/figures/{p.name}" for p in sorted((run / "figures").glob("*.png"))]}


def render_index(systems: list[str], results_dir: str | Path, out: str | Path) -> Path:
    """Write the project report (``results/report.md``) over ``systems``' finished runs."""
    results = Path(results_dir)
    entries = [system_entry(s, results) for s in systems]
    env = environment()
    env.filters["duration"] = lambda s: f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"
    text = env.get_template("index.md.j2").render(entries=entries, n_pass=sum(e["passes"] is True for e in entries),
                                                  n_scored=sum(e["passes"] is not None for e in entries))
    out = Path(out)
    save_text(out, text)
    return out
