"""Ring-attractor head-direction network (seed: ring-attractor-enhanced-training.md)."""
