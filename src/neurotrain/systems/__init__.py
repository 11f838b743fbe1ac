"""Model code, one module per system: pure ``nn.Module`` / pure JAX functions and their losses.
Training loops, checkpoints and logging live in ``neurotrain.training``."""
