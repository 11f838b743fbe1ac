"""CPC encoder with a spiking classifier detecting gravitational-wave chirps (seed: cpc-snn-unified-trainer.md)."""
