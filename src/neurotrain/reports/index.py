"""The project report ``results/report.md``: one index over every system's run.

For each system: its headline metrics beside the quality bar its issue sets and the reference
that bounds them (noise ceiling, matched filter, ground truth, raw-data baseline, untrained
network), the verdict, the training time, and links to its report and figures. Each system's rows
and verdict come from its own ``report.py`` (``headline(m)``, ``verdict(m)``). Everything is
read from the saved artifacts (``metrics.json``, ``model/training_log.json``, ``figures/``).
Rows that need ground truth or annotations (embedded data) are left out on real data, and a
bar that cannot be scored there reads "n/a"; a required field that is missing is an error
naming the file and key.
"""

from __future__ import annotations

from pathlib import Path
from neurotrain import registry
from neurotrain.errors import NeurotrainError
from neurotrain.io import load_json, save_text
from neurotrain.reports.render import environment, fmt, interval, pooled

_MISSING = object()


class Metrics:
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


def row(metric: str, value, bar: str = "", reference: str = "", passes: bool | None = None, spec: str = ".3f") -> dict:
    """One headline row: ``value`` as shown (``spec``) and as a ``number`` (None for text such
    as "n/a"), so that replicates can be pooled (:mod:`neurotrain.reports.aggregate`)."""
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return {"metric": metric, "value": fmt(value, spec), "number": number, "spec": spec, "bar": bar,
            "reference": reference, "passes": passes}



def run_entry(system: str, run: str, results: Path) -> dict:
    """The project report's entry of one run, from ``results/<system>/<run>/aggregate.json``."""
    folder = results / system / run
    if not (folder / "aggregate.json").is_file():
        raise NeurotrainError(folder / "aggregate.json", "missing; build this run first (rule aggregate_run)")
    a = load_json(folder / "aggregate.json")
    for key in ("headline", "bars", "passes", "seeds", "replicates", "training_time_s"):
        if key not in a:
            raise NeurotrainError(folder / "aggregate.json", f"has no key {key!r}; rerun aggregate_run")
    rows = [{"metric": h["metric"], "value": pooled(h, h["spec"]), "ci95": interval(h, h["spec"]),
             "bar": h["bar"], "reference": h["reference"],
             "passes": None if not h["n_scored"] else h["n_pass"] == h["n_scored"],
             "seeds": "-" if not h["n_scored"] else f"{h['n_pass']} of {h['n_scored']}"} for h in a["headline"]]
    first = a["replicates"][0]["folder"]
    return {"system": system, "run": run, "title": registry.spec(system).title, "seeds": a["seeds"], "rows": rows,
            "bars": a["bars"], "passes": a["passes"], "training_time_s": a["training_time_s"]["mean"],
            "validation": a.get("validation"), "overrides": a.get("overrides", {}),
            "report": f"{system}/{run}/run_report.md", "comparison": f"{system}/runs.md",
            "seed_reports": [f"{system}/{run}/{r['report']}" for r in a["replicates"]],
            "figures": [f"{system}/{run}/{first}/figures/{p.name}"
                        for p in sorted((folder / first / "figures").glob("*.png"))]
            + [f"{system}/{run}/figures/{f}" for f in a.get("figures", [])]}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def render_index(runs: list[str], results_dir: str | Path, out: str | Path,
                 summaries: str | Path | None = None) -> Path:
    """Write the project report (``results/report.md``) over the finished ``runs``
    (``<system>/<run>``, in report order; each pooled by :mod:`neurotrain.reports.aggregate`),
    per system a comparison of its runs (``results/<system>/runs.md``: each bar's mean ± SD and
    verdict, side by side), and into ``summaries`` (default ``<results>/summaries``) one HTML page
    per system, ``<system>.html``: each run's verdict and headline table, which
    ``snakemake --report`` shows beside its figures."""
    import jinja2

    from neurotrain.io import atomic_dir
    from neurotrain.reports.render import TEMPLATES

    results = Path(results_dir)
    pairs = []
    for r in runs:
        system, _, run = r.partition("/")
        if not run:
            raise NeurotrainError(f"--runs {r}", "expected <system>/<run>")
        pairs.append((system, run))
    entries = [run_entry(s, r, results) for s, r in pairs]
    systems = list(dict.fromkeys(e["system"] for e in entries))
    env = environment()
    env.filters["duration"] = _duration
    text = env.get_template("index.md.j2").render(entries=entries, n_pass=sum(e["passes"] is True for e in entries),
                                                  n_scored=sum(e["passes"] is not None for e in entries))
    for system in systems:
        mine = [e for e in entries if e["system"] == system]
        bar_names = list(dict.fromkeys(b["name"] for e in mine for b in e["bars"]))
        save_text(results / system / "runs.md", env.get_template("runs.md.j2").render(
            title=mine[0]["title"], system=system, entries=mine, bar_names=bar_names))
    html = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    with atomic_dir(Path(summaries) if summaries is not None else results / "summaries") as d:
        for system in systems:
            mine = [{**e, "training_time": _duration(e["training_time_s"])} for e in entries if e["system"] == system]
            page = html.get_template("summary.html.j2").render(title=mine[0]["title"], system=system, entries=mine)
            save_text(d / f"{system}.html", page)
    out = Path(out)
    save_text(out, text)
    return out
