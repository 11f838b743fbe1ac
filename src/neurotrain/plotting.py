"""Helpers shared by the figure modules: atomic PNG writing and colours."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from neurotrain.io import atomic_path

E_COLOR, I_COLOR = "#d62728", "#1f77b4"
MODEL_COLOR, REAL_COLOR = "#ff7f0e", "#333333"


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
