"""Apply the trained ring attractor to a new angular-velocity trace: path integration.

Input (``ring_attractor.apply.inputs.<name>``), one file:

- ``.npy`` [T]: angular velocity (rad/s) sampled every model ``dt``; the head starts at
  ``apply.theta0`` and its true direction is the integral of the trace.
- ``.nwb``: a head-direction recording, read as preprocessing reads one (the series
  ``apply.series``, default ``data.nwb.series``, in its declared units; NaN timestamps and
  tracking losses are gaps), resampled to ``dt`` on each gap-free stretch and differentiated
  with the Savitzky-Golay filter of ``data.nwb.velocity_window``; the tracked angle is the truth.

Each gap-free stretch starts with the landmark shown at the true direction for
``apply.cue_duration`` s, then the network gets the angular velocity only (darkness), noise-free.

Output (``results/ring_attractor/<run>/seed<k>/apply/<name>/``), T = steps of all stretches together:
  decoded.npy   [T] float32   population-vector direction of the network (rad, (-pi, pi])
  theta.npy     [T] float32   true direction (rad, wrapped)
  omega.npy     [T] float32   angular velocity given to the network (rad/s)
  error_deg.npy [T] float32   |decoded - true| on the circle (degrees)
  stretch.npy   [T] int32     gap-free stretch of each step (0, 1, ...)
  time.npy      [T] float64   time of each step (s; the recording's clock for NWB)
  rates.npy     [T, N]        rates (0-1), only with ``apply.save_rates``
  decoded.png                 true and decoded direction, and the error, over time
  apply.json                  input, steps, dt, median and 90th-percentile error after the cue
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurotrain.errors import NeurotrainError
from neurotrain.io import save_json, save_npy


def read_trace(path: Path, cfg: dict, dt: float) -> list[dict]:
    """Gap-free stretches [{"t", "omega", "theta"}] (s, rad/s, rad unwrapped) on the ``dt`` grid."""
    from neurotrain.systems.ring_attractor.data import gap_free_stretches, read_nwb_direction

    a, nwb = cfg["apply"], cfg["data"]["nwb"]
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            omega = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise NeurotrainError(path, f"not a readable .npy array ({exc})") from None
        omega = np.asarray(omega)
        if omega.dtype.kind not in "biuf" or omega.ndim != 1 or len(omega) < 2:
            raise NeurotrainError(path, f"must be angular velocity [T] (rad/s, one sample per {dt} s), got "
                                        f"{omega.dtype} {omega.shape}")
        if not np.isfinite(omega).all():
            raise NeurotrainError(path, f"holds {int(np.size(omega) - np.isfinite(omega).sum())} NaN/Inf values")
        t = np.arange(len(omega)) * dt
        theta = a["theta0"] + np.concatenate([[0.0], np.cumsum(omega[:-1]) * dt])
        return [{"t": t, "omega": omega.astype(np.float64), "theta": theta}]
    if suffix != ".nwb":
        raise NeurotrainError(path, "an angular-velocity trace must be a .npy [T] or an NWB head-direction recording")
    series = a["series"] or nwb["series"]
    degrees = nwb["degrees"] if a["degrees"] is None else a["degrees"]
    times, angle = read_nwb_direction(path, series, degrees)
    out = [{"t": grid, "omega": om, "theta": th} for grid, th, om in gap_free_stretches(times, angle, dt, nwb)
           if len(grid) >= 2]
    if not out:
        raise NeurotrainError(path, f"{series}: no gap-free stretch of two steps ({2 * dt} s) or more")
    return out


def run_stretch(model, s: dict, cue_steps: int, chunk: int, keep_rates: bool):
    """(decoded [T], rates [T, N] or None) of one stretch: landmark for ``cue_steps``, then darkness."""
    T = len(s["omega"])
    light = np.zeros(T, np.float32)
    light[:cue_steps] = 1.0
    omega = torch.as_tensor(s["omega"], dtype=torch.float32)[None]
    theta = torch.as_tensor(s["theta"], dtype=torch.float32)[None]
    light_t = torch.as_tensor(light)[None]
    state, decoded, rates = None, [], []
    with torch.no_grad():
        for i in range(0, T, chunk):
            r, state = model(omega[:, i:i + chunk], theta[:, i:i + chunk], light_t[:, i:i + chunk], noise=False,
                             state=state)
            decoded.append(model.decode(r)[0][0].numpy())
            if keep_rates:
                rates.append(r[0].numpy().astype(np.float32))
    return np.concatenate(decoded), (np.concatenate(rates) if keep_rates else None)


def apply(cfg: dict, run_dir: str, data_path: str, inputs: list[str], out_dir: str) -> dict:
    """Stage ``apply``: integrate the trace of ``inputs`` (one file) with the trained network
    (``model/model_best.pt``) and write the decoded direction into ``out_dir``."""
    from neurotrain.systems.ring_attractor.train import build_model
    from neurotrain.training.checkpoint import load_checkpoint

    path = Path(inputs[0])
    ck = load_checkpoint(Path(run_dir) / "model" / "model_best.pt")
    model = build_model(ck["model_config"])
    model.load_state_dict(ck["model"])
    model.eval()
    dt = float(model.dt)
    a = cfg["apply"]
    cue = int(round(a["cue_duration"] / dt))
    parts = {k: [] for k in ("decoded", "theta", "omega", "stretch", "time", "after_cue", "rates")}
    for k, s in enumerate(read_trace(path, cfg, dt)):
        dec, rates = run_stretch(model, s, cue, a["chunk_steps"], a["save_rates"])
        parts["decoded"].append(dec)
        parts["theta"].append(np.angle(np.exp(1j * s["theta"])))
        parts["omega"].append(s["omega"])
        parts["stretch"].append(np.full(len(dec), k, np.int32))
        parts["time"].append(s["t"])
        parts["after_cue"].append(np.arange(len(dec)) >= cue)
        if rates is not None:
            parts["rates"].append(rates)
    cat = {k: np.concatenate(v) for k, v in parts.items() if v}
    err = np.degrees(np.abs(np.angle(np.exp(1j * (cat["decoded"] - cat["theta"])))))
    out = Path(out_dir)
    for k in ("decoded", "theta", "omega"):
        save_npy(out / f"{k}.npy", cat[k].astype(np.float32))
    save_npy(out / "error_deg.npy", err.astype(np.float32))
    save_npy(out / "stretch.npy", cat["stretch"])
    save_npy(out / "time.npy", cat["time"].astype(np.float64))
    if a["save_rates"]:
        save_npy(out / "rates.npy", cat["rates"])
    dark = err[cat["after_cue"]]
    summary = {"input": str(path), "kind": "nwb" if path.suffix.lower() == ".nwb" else "npy", "dt_s": dt,
               "steps": int(len(err)), "stretches": int(cat["stretch"].max() + 1), "cue_steps": cue,
               "median_error_deg_in_darkness": float(np.median(dark)) if dark.size else None,
               "p90_error_deg_in_darkness": float(np.percentile(dark, 90)) if dark.size else None,
               "model": str(Path(run_dir) / "model" / "model_best.pt"), "model_epoch": int(ck["epoch"])}
    _figure(out / "decoded.png", cat, err, summary)
    save_json(out / "apply.json", summary)
    return summary


def _figure(path: Path, cat: dict, err: np.ndarray, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurotrain.plotting import save_figure

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    t = cat["time"]
    ax1.plot(t, np.degrees(cat["theta"]), ".", ms=1.5, color="0.4", label="true")
    ax1.plot(t, np.degrees(cat["decoded"]), ".", ms=1.5, color="C3", label="decoded (network)")
    ax1.set_ylabel("direction (deg)")
    ax1.set_ylim(-180, 180)
    ax1.legend(loc="upper right", markerscale=6)
    ax2.plot(t, err, color="C0", lw=0.8)
    ax2.set_ylabel("error (deg)")
    ax2.set_xlabel("time (s)")
    med = summary["median_error_deg_in_darkness"]
    ax1.set_title(f"path integration of {Path(summary['input']).name}: median error in darkness "
                  f"{med:.1f} deg" if med is not None else Path(summary["input"]).name)
    save_figure(fig, path)
