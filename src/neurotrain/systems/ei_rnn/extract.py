"""Extract the E-I RNN's weights and its outputs on the validation and test trials from ``model_best.pt``.

``weights/`` (N neurons, n_exc excitatory, E = embed_dim, H heads, d head size):

=========================  ============================  =======================================
file                       shape                         content
=========================  ============================  =======================================
W_rec.npy                  [N, N]                        recurrent weights, post x pre, Dale's law
W_in.npy                   [N, E]                        input weights (from the embedding)
W_out.npy                  [n_outputs, n_exc]            readout from excitatory units
h0.npy                     [N]                           learned initial state
bias.npy                   [N]                           recurrent unit bias
attention_weights.npy      structured scalar             fields Q [H*d, d], K [H*d, d], V [H, d]
input_embed_linear.npy     [E, n_inputs*H]               attention output projection
attention_maps.npy         [H, n_inputs, n_inputs]       mean attention (query x key channel) on val
E_mask.npy, I_mask.npy     [N] bool                      excitatory / inhibitory units
=========================  ============================  =======================================

``outputs/`` (rates in spikes/s): ``val_*`` on the validation trials (the seed's files; early
stopping and the best checkpoint use these trials) and the same files ``test_*`` on the test
trials, which no training choice saw and the analysis scores:

===============================  ==================================  ======================================
file                             shape                               content
===============================  ==================================  ======================================
val_model_rates.npy              [n_val_trials, n_time, N]           model rates (one noisy run per trial)
val_target_rates.npy             [n_val_trials, n_time, N]           spike counts / dt
val_model_psth.npy               [n_time, N]                         model rates averaged over all trials
test_model_psth_by_condition_init.npy [C, n_time, N]                 the untrained network's on the test trials
                                                                     (the training run's seeded initial weights),
                                                                     the bars' reference
val_target_psth.npy              [n_time, N]                         target averaged over all trials
val_trial_conditions.npy         [n_val_trials]                      condition index (0-based)
condition_values.npy             [n_conditions]                      the data file's label of each index
val_model_psth_by_condition.npy  [n_conditions, n_time, N]           model PSTH per condition
val_target_psth_by_condition.npy [n_conditions, n_time, N]           target PSTH per condition
val_model_outputs.npy            [n_val_trials, n_time, n_outputs]   model task outputs
===============================  ==================================  ======================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurotrain.stats import psth_by_condition
from neurotrain.systems.ei_rnn.data import load_processed
from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_dir, save_npy
from neurotrain.systems.ei_rnn.network import AttentionEmbedding, build_model
from neurotrain.systems.ei_rnn.train import EIRNNTask
from neurotrain.training.checkpoint import load_checkpoint, seed_everything


def extract(cfg: dict, model_dir: str, data_path: str, out_dir: str) -> None:
    """Stage ``extract``: write ``weights/`` and ``outputs/`` under ``out_dir``."""
    ck = load_checkpoint(Path(model_dir) / "model_best.pt")
    data = load_processed(data_path)
    model = build_model(ck["model_config"])
    model.load_state_dict(ck["model"])
    model.eval()
    labels = np.asarray(ck["model_config"]["ei_labels"])
    mc = ck["model_config"]
    got = (data["spikes"].shape[2], data["inputs"].shape[2], data["outputs"].shape[2])
    if got != (len(labels), mc["n_inputs"], mc["n_outputs"]) or not np.array_equal(data["ei_labels"], labels):
        raise NeurotrainError(data_path, f"{got[0]} neurons, {got[1]} inputs and {got[2]} outputs (with their E/I "
                                         f"labels) are not the model's {len(labels)}, {mc['n_inputs']} and "
                                         f"{mc['n_outputs']}; extract with the dataset the model was trained on")
    out = Path(out_dir)

    with atomic_dir(out / "weights") as w:
        save_npy(w / "W_rec.npy", model.w_rec.detach().numpy())
        save_npy(w / "W_in.npy", model.w_in.weight.detach().numpy())
        if model.w_out is not None:
            save_npy(w / "W_out.npy", model.w_out.weight.detach().numpy())
        else:
            save_npy(w / "W_out.npy", np.zeros((0, int((labels == 0).sum())), np.float32))
        save_npy(w / "h0.npy", model.h0.detach().numpy())
        save_npy(w / "bias.npy", model.bias.detach().numpy())
        if isinstance(model.embed, AttentionEmbedding):
            att = {k: v.numpy() for k, v in model.embed.attention_weights().items()}
            dtype = np.dtype([(k, np.float32, v.shape) for k, v in att.items()])
            rec = np.zeros((), dtype=dtype)
            for k, v in att.items():
                rec[k] = v
            save_npy(w / "attention_weights.npy", rec)
            save_npy(w / "input_embed_linear.npy", model.embed.out.weight.detach().numpy())
            with torch.no_grad():
                u = torch.as_tensor(data["inputs"][data["val_idx"]], dtype=torch.float32)
                maps, _ = model.embed.attention(u)
            save_npy(w / "attention_maps.npy", maps.mean(dim=(0, 1)).numpy())
        else:
            save_npy(w / "input_embed_linear.npy", model.embed.weight.detach().numpy())
        save_npy(w / "E_mask.npy", labels == 0)
        save_npy(w / "I_mask.npy", labels == 1)

    # the untrained network first: the training run's seeded draw of the initial weights (run_preamble
    # seeds every generator, then the task builds the model), simulated like the trained one
    seed_everything(ck["config"]["training"]["seed"])
    task = EIRNNTask(data, ck["config"], torch.device("cpu"), eval_seed=ck["config"]["training"]["seed"] + 1)
    task.model.eval()
    test_idx = np.asarray(data["test_idx"])
    with torch.no_grad():
        rates_init, _ = task.simulate(test_idx, task.eval_seed)
    task.model.load_state_dict(ck["model"])
    task.model.eval()
    dt = data["dt"]
    C = int(data["conditions"].max()) + 1
    with atomic_dir(out / "outputs") as o:
        save_npy(o / "condition_values.npy", data["condition_values"])
        # validation trials (early stopping and the best checkpoint; the seed's files) and test
        # trials (held out from every choice: what the analysis scores), the same set of files
        for split, idx in (("val", task.val_idx), ("test", test_idx)):
            with torch.no_grad():
                rates, outputs = task.simulate(idx, task.eval_seed)
            cond = data["conditions"][idx]
            model_rates = rates.numpy() / dt
            target_rates = data["spikes"][idx] / dt
            save_npy(o / f"{split}_model_rates.npy", model_rates.astype(np.float32))
            save_npy(o / f"{split}_target_rates.npy", target_rates.astype(np.float32))
            save_npy(o / f"{split}_model_psth.npy", model_rates.mean(0))
            save_npy(o / f"{split}_target_psth.npy", target_rates.mean(0))
            save_npy(o / f"{split}_trial_conditions.npy", cond)
            save_npy(o / f"{split}_model_psth_by_condition.npy", psth_by_condition(model_rates, cond, C))
            save_npy(o / f"{split}_target_psth_by_condition.npy", psth_by_condition(target_rates, cond, C))
            save_npy(o / f"{split}_model_outputs.npy", outputs.numpy())
        save_npy(o / "test_model_psth_by_condition_init.npy",
                 psth_by_condition(rates_init.numpy() / dt, data["conditions"][test_idx], C).astype(np.float32))
