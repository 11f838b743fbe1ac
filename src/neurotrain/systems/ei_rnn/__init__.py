"""E-I RNN fitted to neural PSTHs under Dale's law (seed: ei-rnn-final-training-plan.md)."""
