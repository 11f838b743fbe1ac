"""Analysis: population statistics shared by all systems (``stats``), and each system's
extraction of weights/outputs from its checkpoint and its metrics."""
