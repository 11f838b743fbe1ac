"""A toy system: linear regression on generated data, trained by the shared torch loop. It lives
in the tests to prove docs/adding-a-system.md: copied into ``src/neurotrain/systems/toy/`` it
runs the whole chain under Snakemake with no edit anywhere else."""
