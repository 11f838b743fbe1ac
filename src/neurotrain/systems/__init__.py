"""One folder per system, everything it owns side by side (see :mod:`neurotrain.spec`):

    spec.py        torch-free: framework, stage entries, the config keys each stage reads,
                   real-data sources, figure captions (read by the Snakefile)
    schema.yaml    its config block (JSON schema; the defaults are the seed's values)
    data.py        embedded generator, real-format readers, preprocessing, processed HDF5
    network.py     the model (nn.Module or pure JAX) and its losses (cebra: the library's)
    train.py       the task the shared training loop runs, the train stage, the seed's own API
    extract.py     weights and outputs from the saved checkpoint
    analyze.py     metrics, PCA, Fano factors, the system's scores
    figures.py     matplotlib figures
    report.md.j2   the Jinja report; report.py: its headline rows in the project report

A folder here with a ``spec.py`` is a registered system (:mod:`neurotrain.registry`).
"""
