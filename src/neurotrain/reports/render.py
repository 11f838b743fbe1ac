"""Render a system's markdown report from its artifacts and Jinja template."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
from markupsafe import Markup
import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import load_json, save_text

TEMPLATES = Path(__file__).resolve().parent / "templates"


def array_inventory(run: Path) -> dict[str, list[dict]]:
    """Every ``.npy`` under the run folder by subfolder: name, shape, dtype (header only)."""
    out: dict[str, list[dict]] = {}
    for sub in ("weights", "outputs", "metrics", "population"):
        rows = []
        for f in sorted((run / sub).glob("*.npy")):
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
            shape, dtype = arr.shape, arr.dtype
            rows.append({"name": f.name, "shape": list(shape), "dtype": str(dtype) if not dtype.names else "structured: " + ", ".join(f"{n} {list(dtype[n].shape)}" for n in dtype.names)})
        out[sub] = rows
    return out


def fmt(value, spec: str = ".3f") -> str:
    """A number in ``spec``, anything else as text (the templates' ``fmt`` filter). An integer
    spec (``d``) shows a float that is not whole (a mean over seeds) with two decimals."""
    if isinstance(value, float) and spec.endswith("d"):
        return format(int(value), spec) if value.is_integer() else format(value, ".2f")
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def pooled(p: dict, spec: str = ".3f") -> str:
    """A value pooled over seeds (``{"mean", "sd", ...}`` from
    :func:`neurotrain.reports.aggregate.pooled`) as ``mean ± SD`` in ``spec`` (``n/a`` when no
    seed scored it, the mean alone for one seed): the templates' ``pooled`` filter."""
    if p.get("mean") is None:
        return "n/a"
    return fmt(p["mean"], spec) + ("" if p.get("sd") is None else " ± " + fmt(p["sd"], spec))


def interval(p: dict, spec: str = ".3f") -> str:
    """The 95% interval of a pooled value as ``[low, high]`` (``-`` for fewer than two seeds):
    the templates' ``interval`` filter."""
    return "-" if p.get("ci95") is None else f"[{fmt(p['ci95'][0], spec)}, {fmt(p['ci95'][1], spec)}]"


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


# The table of a system's quality bars (metrics.json quality.bars, neurotrain.quality.bar):
# every report states, for each bar, the reference, the trained value and the margin.
BARS_TABLE = """{% macro bars_table(bars) -%}
| bar | reference | trained | required | margin | verdict |
| --- | --- | --- | --- | --- | --- |
{% for b in bars %}
| {{ b.name }} | {{ "-" if b.reference is none else (b.reference | fmt) ~ " (" ~ b.reference_kind ~ ")" }} | \
{{ "n/a" if b.trained is none else b.trained | fmt }}{{ " " ~ b.unit if b.unit and b.trained is not none else "" }} | \
{{ b.required }} | {{ "-" if b.margin is none else "%+.3f" | format(b.margin) }} | \
{{ "not scored" if b.passes is none else ("**PASS**" if b.passes else "**FAIL**") }} |
{% endfor %}
{%- endmacro %}"""


def inert(value):
    """Every value a template prints, made inert for markdown renderers: text from data (a session,
    sequence or file name, a path, a behaviour label) cannot open a raw HTML tag or comment (a
    ``<`` before a letter, ``/``, ``!`` or ``?`` becomes ``&lt;``; ``<= 5`` stays as it is) nor
    break out of a table cell (``|`` becomes ``\\|``)."""
    if isinstance(value, Markup):  # a table the environment's own macro built
        return value
    if isinstance(value, str):
        return _TAG_START.sub("&lt;", value).replace("|", "\\|")
    return value


def environment(folder: str | Path = TEMPLATES) -> jinja2.Environment:
    """The Jinja environment of every report template (in ``folder``): strict about undefined names."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, finalize=inert)
    env.filters.update(fmt=fmt, pooled=pooled, interval=interval)
    macro = env.from_string(BARS_TABLE).module.bars_table
    env.globals["bars_table"] = lambda bars: Markup(macro(bars))
    return env


def render_report(system: str, cfg: dict, run_dir: str, out: str | None, template: str | Path) -> Path:
    """Stage ``report``: fill the system's ``report.md.j2`` (``template``) and write
    ``training_report.md`` (or ``out``). Raises NeurotrainError naming a missing artifact."""
    run = Path(run_dir)
    for need in ("metrics.json", "model/training_log.json", "model/config.json"):
        if not (run / need).is_file():
            raise NeurotrainError(run / need, "missing; run the earlier stages first")
    template = Path(template)
    env = environment(template.parent)
    log = load_json(run / "model" / "training_log.json")
    # the run folder is absolute: the report's code snippets run as written from any folder
    ctx = {"system": system, "cfg": cfg, "run_dir": str(run.resolve()), "metrics": load_json(run / "metrics.json"),
           "summary": log["summary"], "history": log["history"], "run_config": load_json(run / "model" / "config.json"),
           "arrays": array_inventory(run), "figures": sorted(p.name for p in (run / "figures").glob("*.png"))}
    text = env.get_template(template.name).render(**ctx)
    path = Path(out) if out else run / "training_report.md"
    save_text(path, text)
    return path
