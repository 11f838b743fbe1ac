"""A run's replicates pooled: ``results/<system>/<run>/aggregate.json`` and ``run_report.md``.

For each headline metric of the system (its ``report.headline``) and each quality bar
(``metrics.json`` ``quality.bars``, :func:`neurotrain.quality.bar`) the seeds' values are pooled
into a mean, a sample standard deviation and a 95% confidence interval of the mean (Student's t
with n - 1 degrees of freedom; none for a single seed). A bar is judged on the mean over seeds of
its margin (how far each seed is past the requirement): it passes when that mean is at least 0,
which for a bar with one threshold is the mean value meeting it; the interval of the margin and
the number of seeds that pass on their own are shown beside it. A system whose analysis lists no
``quality.bars`` passes when every seed's own verdict does. A system's report module may
define ``curves(seed_dir)`` (e.g. cpc_snn's detection efficiency against SNR); each curve is drawn
for every seed and as the mean with its spread (``figures/<name>.png``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from neurotrain import registry
from neurotrain.errors import NeurotrainError
from neurotrain.io import load_json, save_json, save_text
from neurotrain.reports.index import Metrics

SEED_DIR = re.compile(r"seed(\d+)$")


def pooled(values) -> dict:
    """Mean, sample SD (ddof 1) and the 95% t-interval of the mean of the finite numbers in
    ``values`` (None entries and text are left out; ``n`` counts the numbers pooled)."""
    from scipy.stats import t

    x = np.asarray([v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v)], float)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": None}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "ci95": None}
    sd = float(x.std(ddof=1))
    half = float(t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return {"n": n, "mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}


_NUMBER = re.compile(r"[-+]?\d+(?:\.(\d+))?(?:[eE][-+]?\d+)?")


def pooled_text(texts: list[str]) -> str:
    """The seeds' reference texts as one: the text itself when the seeds agree; when they differ
    only in their numbers (``"mean 0.955"``, ``"mean 0.983"``), each number that differs becomes
    the mean ± SD over seeds at the decimals shown (``"mean 0.969 ± 0.020"``); otherwise the
    distinct texts joined by ``" / "``."""
    distinct = list(dict.fromkeys(texts))
    if len(distinct) <= 1:
        return distinct[0] if distinct else ""
    if len({_NUMBER.sub("#", t) for t in texts}) != 1:
        return " / ".join(distinct)
    numbers = [list(_NUMBER.finditer(t)) for t in texts]
    pieces = _NUMBER.sub("\0", texts[0]).split("\0")  # the text around the numbers
    out = []
    for i, piece in enumerate(pieces[:-1]):
        values = [float(n[i].group(0)) for n in numbers]
        first = numbers[0][i]
        if max(values) == min(values):
            out.append(piece + first.group(0))
            continue
        p, decimals = pooled(values), len(first.group(1) or "")
        out.append(f"{piece}{p['mean']:.{decimals}f} ± {p['sd']:.{decimals}f}")
    return "".join(out) + pieces[-1]


def _seed_of(folder: Path) -> int:
    match = SEED_DIR.search(folder.name)
    if not match:
        raise NeurotrainError(folder, "not a replicate folder (results/<system>/<run>/seed<k>)")
    return int(match.group(1))


def _bars(per_seed: list[list[dict]], seeds: list[int], folder: Path) -> list[dict]:
    names = [b["name"] for b in per_seed[0]]
    for seed, bars in zip(seeds, per_seed):
        if [b["name"] for b in bars] != names:
            raise NeurotrainError(folder / f"seed{seed}" / "metrics.json",
                                  "its quality bars differ from the first seed's; rerun its analysis")
    out = []
    for i, name in enumerate(names):
        col = [bars[i] for bars in per_seed]
        scored = [b for b in col if b["passes"] is not None and b["margin"] is not None]
        margin = pooled([b["margin"] for b in scored])
        first = col[0]
        out.append({"name": name, "required": first["required"], "unit": first["unit"],
                    "reference_kind": first["reference_kind"],
                    "trained": pooled([b["trained"] for b in col]), "reference": pooled([b["reference"] for b in col]),
                    "margin": margin, "n_pass": sum(b["passes"] is True for b in col), "n_scored": len(scored),
                    "values": [b["trained"] for b in col],
                    "passes": None if margin["mean"] is None else bool(margin["mean"] >= 0)})
    return out


def flat_keys(node: dict, prefix: str = "") -> dict:
    """``{"model": {"units": 64}}`` -> ``{"model.units": 64}``: a run's overrides as dotted keys."""
    out = {}
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flat_keys(v, key))
        else:
            out[key] = v
    return out


def aggregate_run(system: str, run: str, seed_dirs: list[str], out_dir: str | Path,
                  overrides: dict | None = None) -> dict:
    """Pool the replicates in ``seed_dirs`` (``results/<system>/<run>/seed<k>``, each with
    ``metrics.json``, ``model/training_log.json`` and ``training_report.md``) into
    ``<out_dir>/aggregate.json``, ``<out_dir>/run_report.md`` and ``<out_dir>/figures/``;
    ``overrides`` (the run's changes to its system's config block) are listed in them.
    Returns the aggregate. Raises NeurotrainError naming a missing file or key, or a seed whose
    bars differ from the first seed's."""
    from neurotrain.io import atomic_dir

    out = Path(out_dir)
    folders = [Path(d) for d in seed_dirs]
    if not folders:
        raise NeurotrainError(f"run {system}/{run}", "has no seeds")
    seeds = [_seed_of(f) for f in folders]
    report = registry.report_module(system)
    metrics, rows, times, logs = [], [], [], []
    for f in folders:
        for need in ("metrics.json", "model/training_log.json", "training_report.md"):
            if not (f / need).is_file():
                raise NeurotrainError(f / need, "missing; build this replicate first")
        m = Metrics(f / "metrics.json")
        metrics.append(m)
        rows.append(report.headline(m))
        logs.append(load_json(f / "model" / "training_log.json").get("summary", {}))
        times.append(logs[-1].get("training_time_s"))
    headline = []
    for i, r in enumerate(rows[0]):
        col = [seed_rows[i] if i < len(seed_rows) and seed_rows[i]["metric"] == r["metric"] else None
               for seed_rows in rows]
        values = [c["number"] if c else None for c in col]
        reference = pooled_text([c["reference"] for c in col if c is not None])
        headline.append({"metric": r["metric"], "bar": r["bar"], "reference": reference, "spec": r["spec"],
                         "values": values, **pooled(values),
                         "n_pass": sum(c is not None and c["passes"] is True for c in col),
                         "n_scored": sum(c is not None and c["passes"] is not None for c in col)})
    bars = _bars([m.get("quality.bars") or [] for m in metrics], seeds, out)
    scored = [b["passes"] for b in bars if b["passes"] is not None]
    verdicts = [report.verdict(m) for m in metrics]
    if not bars and all(v is not None for v in verdicts):  # a system without quality.bars: every seed must pass
        scored = verdicts
    summary = {"system": system, "run": run, "title": registry.spec(system).title, "seeds": seeds,
               "overrides": flat_keys(overrides or {}),
               "replicates": [{"seed": k, "folder": f.name, "report": f"{f.name}/training_report.md",
                               "passes": v, "training_time_s": t}
                              for k, f, v, t in zip(seeds, folders, verdicts, times)],
               "headline": headline, "bars": bars, "passes": all(scored) if scored else None,
               "training_time_s": pooled(times), "validation": _validation(logs),
               "method": "mean over seeds; SD with ddof 1; 95% interval of the mean from Student's t with n - 1 "
                         "degrees of freedom; a bar passes when the mean of its per-seed margins is >= 0"}
    curves = getattr(report, "curves", None)
    with atomic_dir(out / "figures") as fig_dir:
        if curves is not None:
            for name, curve in _pool_curves([curves(f) for f in folders], seeds).items():
                _plot_curve(curve, seeds, fig_dir / f"{name}.png")
                summary.setdefault("curves", {})[name] = {k: v for k, v in curve.items() if k != "seeds_y"}
    summary["figures"] = sorted(p.name for p in (out / "figures").glob("*.png"))
    save_json(out / "aggregate.json", summary)
    from neurotrain.reports.render import environment

    text = environment().get_template("run_report.md.j2").render(a=summary)
    save_text(out / "run_report.md", text)
    return summary


def _validation(summaries: list[dict]) -> dict | None:
    """The validation measure that chose each seed's ``model_best`` (the training log's
    ``monitor`` and its best value), pooled: what to compare runs on while tuning, without the
    test part. None for a system that chooses nothing (CEBRA trains a fixed number of steps)."""
    names = {s.get("monitor") for s in summaries}
    if len(names) != 1 or None in names:
        return None
    name = names.pop()
    values = [s.get(f"best_{name}", s.get("best_monitor")) for s in summaries]
    return {"measure": name, "values": values, **pooled(values)}


def _pool_curves(per_seed: list[dict], seeds: list[int]) -> dict:
    """Each curve of the seeds (same x) as ``{x, labels, mean, sd, seeds_y}``."""
    out = {}
    for name, first in per_seed[0].items():
        x = np.asarray(first["x"], float)
        series = {}
        for label in first["y"]:
            ys = np.stack([np.asarray(c[name]["y"][label], float) for c in per_seed])
            series[label] = ys
        out[name] = {"title": first["title"], "xlabel": first["xlabel"], "ylabel": first["ylabel"], "x": x.tolist(),
                     "mean": {k: np.nanmean(v, 0).tolist() for k, v in series.items()},
                     "sd": {k: (np.nanstd(v, 0, ddof=1) if len(seeds) > 1 else np.zeros(v.shape[1])).tolist()
                            for k, v in series.items()},
                     "seeds_y": series}
    return out


def _plot_curve(curve: dict, seeds: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurotrain.plotting import save_figure

    fig, ax = plt.subplots(figsize=(5.5, 4))
    x = np.asarray(curve["x"])
    for i, (label, ys) in enumerate(curve["seeds_y"].items()):
        color = f"C{i}"
        for y in ys:
            ax.plot(x, y, color=color, alpha=0.3, lw=0.8)
        mean, sd = np.asarray(curve["mean"][label]), np.asarray(curve["sd"][label])
        ax.plot(x, mean, color=color, lw=2, label=f"{label}: mean of {len(seeds)} seeds")
        ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
    ax.set_xlabel(curve["xlabel"])
    ax.set_ylabel(curve["ylabel"])
    ax.set_title(f"{curve['title']} (thin: each seed; band: ±1 SD)")
    ax.legend(fontsize=8)
    save_figure(fig, path)
