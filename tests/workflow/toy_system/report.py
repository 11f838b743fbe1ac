"""The project report's rows of the toy system."""

from __future__ import annotations

from neurotrain.reports.index import Metrics, row


def headline(m: Metrics) -> list[dict]:
    return [row("validation R^2", m["r2"], f">= {m['quality.min_r2']:g}", "1 = perfect", m["quality.passes"])]


def verdict(m: Metrics) -> bool | None:
    return m["quality.passes"]
