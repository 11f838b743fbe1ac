"""Extract the ring attractor's weights and its activity on held-out trajectories.

The trained network is ``model_best.pt`` (best validation loss); the untrained network is
rebuilt from the same seed, so every output also exists "at initialisation" for comparison.

``weights/`` (n_exc = E, n_inh = I, N = E + I):

=====================  ===========  ==========================================================
file                   shape        content
=====================  ===========  ==========================================================
connectivity.npy       [N, N]       effective recurrent weights, post x pre (gains applied;
                                    E first): the input to a unit is connectivity @ rates
W_EE.npy               [E, E]       fixed E->E kernel (rows sum to 1)
W_rot.npy              [E, E]       rotating (velocity) kernel
W_EI.npy, W_IE.npy     [I, E], [E, I]  learned E->I and I->E matrices (before gains)
preferred.npy          [E]          preferred direction of each excitatory unit (rad)
parameters.json                     learned scalars (gains, noise rates) and their initial values
=====================  ===========  ==========================================================

``outputs/`` (n = held-out test trajectories, T steps; n_d drift trials, T_d steps):

=========================  ==============  =====================================================
file                       shape           content
=========================  ==============  =====================================================
test_rates.npy             [n, T, N]       rates (0-1; x max_rate for Hz), one noisy run
test_decoded.npy           [n, T]          population-vector direction (rad)
test_decoded_init.npy      [n, T]          the same for the untrained network
test_theta.npy             [n, T]          true direction (rad)
test_omega.npy             [n, T]          angular velocity (rad/s)
test_light.npy             [n, T]          1 where the landmark is visible
drift_decoded.npy          [n_d, T_d]      direction with no input after a 0.2 s cue (rad)
drift_decoded_init.npy     [n_d, T_d]      the same for the untrained network
drift_start.npy            [n_d]           cued direction (rad)
info.json                                  dt, max_rate, n_cue (drift cue steps), loss_skip steps
=========================  ==============  =====================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurotrain.systems.ring_attractor.data import load_processed
from neurotrain.io import atomic_dir, save_json, save_npy
from neurotrain.systems.ring_attractor.train import build_model, drift_run
from neurotrain.training.checkpoint import load_checkpoint


def _run(model, data, idx, seed):
    g = torch.Generator().manual_seed(seed)
    t = {k: torch.as_tensor(data[k][idx]) for k in ("omega", "theta", "light")}
    with torch.no_grad():
        rates, _ = model(t["omega"], t["theta"], t["light"], noise=True, generator=g)
        decoded, _ = model.decode(rates)
    return rates.numpy(), decoded.numpy()


def extract(cfg: dict, model_dir: str, data_path: str, out_dir: str) -> None:
    """Stage ``extract``: ``weights/`` and ``outputs/`` under ``out_dir``."""
    ck = load_checkpoint(Path(model_dir) / "model_best.pt")
    data = load_processed(data_path)
    mc = ck["model_config"]
    seed = ck["config"]["training"]["seed"]
    torch.manual_seed(seed)
    init = build_model(mc).eval()  # the same draw as the training run's initial weights
    model = build_model(mc)
    model.load_state_dict(ck["model"])
    model.eval()
    test = np.flatnonzero(data["split"] == 2)
    a = cfg["analysis"]
    out = Path(out_dir)

    with torch.no_grad():
        M = model.recurrent_matrix()
    N = model.n_exc + model.n_inh
    with atomic_dir(out / "weights") as w:
        save_npy(w / "connectivity.npy", M[:, :N].T.numpy().astype(np.float32))
        for name in ("W_EE", "W_rot", "W_EI", "W_IE", "preferred"):
            save_npy(w / f"{name}.npy", getattr(model, name).detach().numpy().astype(np.float32))
        save_json(w / "parameters.json", {"trained": model.ring_parameters(), "initial": init.ring_parameters(),
                                          "best_epoch": ck["epoch"],
                                          "constraint_violations": model.constraint_violations()})

    rates, decoded = _run(model, data, test, seed + 2)
    _, decoded_init = _run(init, data, test, seed + 2)
    _, d_dec, d_start, n_cue = drift_run(model, a["drift_trials"], a["drift_duration"], seed + 3, "cpu")
    _, d_dec_init, _, _ = drift_run(init, a["drift_trials"], a["drift_duration"], seed + 3, "cpu")
    with atomic_dir(out / "outputs") as o:
        save_npy(o / "test_rates.npy", rates.astype(np.float32))
        save_npy(o / "test_decoded.npy", decoded.astype(np.float32))
        save_npy(o / "test_decoded_init.npy", decoded_init.astype(np.float32))
        for k in ("theta", "omega", "light"):
            save_npy(o / f"test_{k}.npy", data[k][test].astype(np.float32))
        save_npy(o / "drift_decoded.npy", d_dec.numpy().astype(np.float32))
        save_npy(o / "drift_decoded_init.npy", d_dec_init.numpy().astype(np.float32))
        save_npy(o / "drift_start.npy", d_start.numpy().astype(np.float32))
        save_json(o / "info.json", {"dt": model.dt, "max_rate": model.max_rate, "n_exc": model.n_exc,
                                    "n_inh": model.n_inh, "n_cue": n_cue,
                                    "loss_skip": int(round(ck["config"]["loss"]["loss_skip"] / model.dt))})
