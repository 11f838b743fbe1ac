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
from neurotrain.reports.render import environment, fmt

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
    return {"metric": metric, "value": fmt(value, spec), "bar": bar, "reference": reference, "passes": passes}



def system_entry(system: str, results: Path) -> dict:
    run = results / system
    spec = registry.spec(system)
    report = registry.report_module(system)
    for need in ("metrics.json", "model/training_log.json", "training_report.md"):
        if not (run / need).is_file():
            raise NeurotrainError(run / need, "missing; build this system's chain first")
    m = Metrics(run / "metrics.json")
    log = load_json(run / "model" / "training_log.json")
    seconds = log.get("summary", {}).get("training_time_s")
    if not isinstance(seconds, (int, float)):
        raise NeurotrainError(run / "model" / "training_log.json", "has no summary.training_time_s")
    return {"system": system, "title": spec.title, "rows": report.headline(m), "passes": report.verdict(m),
            "training_time_s": float(seconds), "report": f"{system}/training_report.md",
            "figures": [f"{system}/figures/{p.name}" for p in sorted((run / "figures").glob("*.png"))]}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def render_index(systems: list[str], results_dir: str | Path, out: str | Path,
                 summaries: str | Path | None = None) -> Path:
    """Write the project report (``results/report.md``) over ``systems``' finished runs, and into
    ``summaries`` (default ``<results>/summaries``) one HTML page per system, ``<system>.html``:
    its verdict and headline table, which ``snakemake --report`` shows beside its figures."""
    import jinja2

    from neurotrain.io import atomic_dir
    from neurotrain.reports.render import TEMPLATES

    results = Path(results_dir)
    entries = [system_entry(s, results) for s in systems]
    env = environment()
    env.filters["duration"] = _duration
    text = env.get_template("index.md.j2").render(entries=entries, n_pass=sum(e["passes"] is True for e in entries),
                                                  n_scored=sum(e["passes"] is not None for e in entries))
    html = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    with atomic_dir(Path(summaries) if summaries is not None else results / "summaries") as d:
        for e in entries:
            page = html.get_template("summary.html.j2").render(e={**e, "training_time": _duration(e["training_time_s"])})
            save_text(d / f"{e['system']}.html", page)
    out = Path(out)
    save_text(out, text)
    return out
