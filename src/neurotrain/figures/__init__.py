"""Figures: matplotlib PNGs, one module per system, reading only saved artifacts."""
