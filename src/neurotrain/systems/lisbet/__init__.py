"""LISBET-style self-supervised transformer on mouse social behaviour (seed: lisbet-self-supervised-training.rst)."""
