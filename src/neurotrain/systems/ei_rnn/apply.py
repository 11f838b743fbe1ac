"""Apply the trained E-I RNN to new input conditions, without retraining.

Input (``ei_rnn.apply.inputs.<name>``): one file of input time courses, ``.npy`` [conditions,
time, inputs] (or [conditions, time] for one input), or a ``.mat`` (v5 or v7.3) holding them in
the variable ``apply.variable``. The inputs are what the training data's ``inputs`` variable
held: same number of input channels, same time bin (``dt`` of the processed data); the number of
time bins may differ.

Output (``results/ei_rnn/<run>/seed<k>/apply/<name>/``):
  rates.npy    [conditions, time, N] float32  the network's noise-free rates (spikes/s: the
                                              rate per bin divided by dt)
  outputs.npy  [conditions, time, n_outputs]  its read-out (empty last axis without outputs)
  inputs.npy   [conditions, time, inputs]     the inputs as read
  apply.json                                  input file, shapes, dt, model checkpoint and epoch
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurotrain.errors import NeurotrainError
from neurotrain.io import save_json, save_npy


def read_inputs(path: str | Path, variable: str, n_inputs: int) -> np.ndarray:
    """Inputs [conditions, time, n_inputs] float32 from a ``.npy`` or ``.mat`` file. Raises
    NeurotrainError naming the file: another format, a missing variable, another number of
    input channels than the model's, no time bins, values that are not finite."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            u = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise NeurotrainError(path, f"not a readable .npy array ({exc})") from None
    elif path.suffix.lower() == ".mat":
        from neurotrain.matlab import read_mat

        data = read_mat(path, [variable])
        if variable not in data:
            raise NeurotrainError(path, f"has no variable {variable!r} (config key ei_rnn.apply.variable)")
        u = data[variable]
    else:
        raise NeurotrainError(path, "inputs must be a .npy or .mat file")
    u = np.asarray(u)
    if u.dtype.kind not in "biuf":
        raise NeurotrainError(path, f"inputs must be numbers, got {u.dtype}")
    if u.ndim == 2 and n_inputs == 1:
        u = u[:, :, None]
    if u.ndim != 3 or u.shape[2] != n_inputs:
        raise NeurotrainError(path, f"inputs have shape {u.shape}; the model takes [conditions, time, {n_inputs}] "
                                    f"({n_inputs} input channel{'s' if n_inputs != 1 else ''}, as in its training data)")
    if 0 in u.shape[:2]:
        raise NeurotrainError(path, f"inputs have shape {u.shape}: no conditions or no time bins")
    if not np.isfinite(u).all():
        raise NeurotrainError(path, f"inputs hold {int(np.size(u) - np.isfinite(u).sum())} NaN/Inf values")
    return u.astype(np.float32)


def apply(cfg: dict, run_dir: str, data_path: str, inputs: list[str], out_dir: str) -> dict:
    """Stage ``apply``: rates of the trained network (``model/model_best.pt``) for the new
    input conditions of ``inputs`` (one file) into ``out_dir``."""
    from neurotrain.systems.ei_rnn.data import load_processed
    from neurotrain.systems.ei_rnn.network import build_model
    from neurotrain.training.checkpoint import load_checkpoint

    ck = load_checkpoint(Path(run_dir) / "model" / "model_best.pt")
    mc = ck["model_config"]
    u = read_inputs(inputs[0], cfg["apply"]["variable"], int(mc["n_inputs"]))
    dt = float(load_processed(data_path)["dt"])
    model = build_model(mc)
    model.load_state_dict(ck["model"])
    model.eval()
    with torch.no_grad():
        rates, outputs = model(torch.as_tensor(u), noise=False)
    out = Path(out_dir)
    save_npy(out / "rates.npy", (rates.numpy() / dt).astype(np.float32))
    save_npy(out / "outputs.npy", outputs.numpy().astype(np.float32))
    save_npy(out / "inputs.npy", u)
    summary = {"input": str(inputs[0]), "conditions": int(u.shape[0]), "time_bins": int(u.shape[1]),
               "n_inputs": int(u.shape[2]), "n_neurons": int(rates.shape[2]), "dt_s": dt,
               "model": str(Path(run_dir) / "model" / "model_best.pt"), "model_epoch": int(ck["epoch"]),
               "rates_unit": "spikes/s", "noise": False}
    save_json(out / "apply.json", summary)
    return summary
