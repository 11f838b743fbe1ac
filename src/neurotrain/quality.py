"""Quality bars as the reports state them: for each bar, the reference an untrained model (or
chance, or the raw data) reaches, the trained value, what the bar requires and the margin.

Every system's analysis lists its bars in ``metrics.json`` under ``quality.bars`` with
:func:`bar`; the reports render them with the ``bars_table`` macro
(:mod:`neurotrain.reports.render`)."""

from __future__ import annotations

import math


def bar(name: str, trained: float | None, required: str, passes: bool | None, margin: float | None = None,
        reference: float | None = None, reference_kind: str = "", unit: str = "") -> dict:
    """One bar: ``trained`` value, the ``reference`` value and what it is (``reference_kind``:
    "untrained network", "raw keypoints", "chance", "matched filter", ...), the requirement as
    text (``required``), ``margin`` (how far the trained value is past the requirement; negative
    when it falls short) and the verdict (None: not scored). Non-finite numbers become None."""
    def num(x):
        return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)

    return {"name": name, "trained": num(trained), "reference": num(reference), "reference_kind": reference_kind,
            "required": required, "margin": num(margin), "unit": unit,
            "passes": None if passes is None else bool(passes)}
