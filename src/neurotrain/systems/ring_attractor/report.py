"""The project report's rows of this system: headline metrics beside their bar and reference."""

from __future__ import annotations

from neurotrain.reports.index import Metrics, row


def headline(m: Metrics) -> list[dict]:
    """One row per quality bar (``quality.bars``): the trained value, the bar, the untrained network's value."""
    return [row(b["name"], b["trained"] if b["trained"] is not None else "n/a", b["required"],
                "" if b["reference"] is None else f"{b['reference_kind']} {b['reference']:.2f}", b["passes"],
                spec=".0f" if b["name"].startswith("parameters") else ".2f")
            for b in m["quality.bars"]]


def verdict(m: Metrics) -> bool | None:
    """The system's quality bar: passed, failed, or None where it cannot be scored."""
    return m["quality.passes"]
