"""CEBRA multi-session contrastive embedding (seed: cebra-multisession-training.md)."""
