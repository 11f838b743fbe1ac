"""Training engineering shared per framework: loops, checkpoints, resume, signals, logging."""
