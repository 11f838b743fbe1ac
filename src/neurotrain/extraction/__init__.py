"""Extraction: weights and model outputs as ``.npy`` from a saved checkpoint, one module per
system, so that a change to analysis or extraction never retrains."""
