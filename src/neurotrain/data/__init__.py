"""Datasets: generators of the embedded datasets (with ground truth), readers of real formats,
and the preprocessing of each into the project's standard HDF5 layout."""
