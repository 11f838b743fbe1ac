"""The project's exception type for user errors (bad files, bad config, bad data)."""

from __future__ import annotations


class NeurotrainError(Exception):
    """A user-facing error that names where it happened.

    ``where`` is a file path or a config key (``ei_rnn.training.max_epochs``); the CLI prints
    ``error: <where>: <what>`` on one line and exits with status 2, without a traceback.
    """

    def __init__(self, where: object, what: str):
        self.where = str(where)
        self.what = what
        super().__init__(f"{self.where}: {what}")


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving its state; rerunning resumes."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}; state saved, rerun the same target to resume")
