"""The atomic writers: a file or folder is whole or absent, and the temporaries a killed writer
left (SIGKILL between writing and renaming) are removed by the next writer of the same target,
never those of another target in the same folder."""

from __future__ import annotations

import os

import numpy as np
import pytest

from neurotrain.io import atomic_dir, save_npy, staged


def test_next_writer_sweeps_a_killed_writers_temporaries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as Snakemake passes them
    os.makedirs("run/.stage.ab12cd_9.tmp/weights")
    os.makedirs("run/.figures.zz00yy11.old/x")
    for name in (".a.npy.k3j4h5g6.tmp", ".a.npy.b.k3j4h5g6.tmp", ".b.npy.k3j4h5g6.tmp", ".a.npy.notmkstemp.tmp"):
        open(f"run/{name}", "w").close()
    save_npy("run/a.npy", np.arange(3))
    with atomic_dir("run/figures") as d:
        (d / "f.png").write_bytes(b"png")
    with staged("run") as d:
        (d / "weights").mkdir()
    left = sorted(os.listdir("run"))
    # a.npy's own temporary and the dead stage/figures folders are gone; names that are not a
    # temporary of the target written (another file's, or not tempfile's pattern) stay
    assert left == [".a.npy.b.k3j4h5g6.tmp", ".a.npy.notmkstemp.tmp", ".b.npy.k3j4h5g6.tmp", "a.npy", "figures",
                    "weights"]
    assert np.load("run/a.npy").tolist() == [0, 1, 2]


def test_json_is_strict_nan_written_as_null_and_named(tmp_path, caplog):
    """metrics.json and every other JSON artifact parse with strict readers (no NaN/Infinity)."""
    import json
    import logging

    from neurotrain.io import save_json

    with caplog.at_level(logging.WARNING, logger="neurotrain"):
        save_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, np.float32("inf")], "c": np.array([np.nan, 2.0]),
                                        "d": {"e": np.float64(3.5)}})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard literal {c}")) == {
        "a": None, "b": [1.0, None], "c": [None, 2.0], "d": {"e": 3.5}}
    assert "3 value(s) not finite, written as null: a, b[1], c[0]" in caplog.text
