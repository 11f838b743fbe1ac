"""E-I RNN training: the task the shared torch loop runs (batches of trials, the four loss
terms, validation PSTH correlation, the every-N-epochs detail) and the ``train`` stage.
The model and its losses are in :mod:`neurotrain.systems.ei_rnn.network`."""

from __future__ import annotations

import numpy as np
import torch

from neurotrain.systems.ei_rnn.network import (EIRNN, MODEL_KEYS, build_model, condition_psth, neuron_loss,  # noqa: F401
                                               output_loss, reg_loss, trial_loss, trial_targets)

MONITOR_FANO_WINDOW_S = 0.1


class EIRNNTask:
    """Binds the model, the processed dataset and the loss config for the torch training loop.

    ``data`` is the processed dataset (see ``neurotrain.systems.ei_rnn.data``); spike counts are the
    targets, in counts per bin, like the model's rates.
    """

    def __init__(self, data: dict, cfg: dict, device: torch.device, eval_seed: int = 0):
        self.device = device
        self.loss_cfg = cfg["loss"]
        # Training-time Fano factors (every detail_every epochs) count spikes in 100 ms windows;
        # the analysis stage's window is ei_rnn.analysis.fano_window_bins.
        self.fano_window = max(1, min(int(round(MONITOR_FANO_WINDOW_S / data["dt"])), data["spikes"].shape[1]))
        self.batch_size = cfg["training"]["batch_size"]
        self.eval_seed = eval_seed
        t = lambda a, dtype=torch.float32: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        self.spikes, self.inputs, self.outputs = t(data["spikes"]), t(data["inputs"]), t(data["outputs"])
        self.conditions = t(data["conditions"], torch.long)
        # Inputs repeat across trials of a condition: the embedding runs once per distinct vector.
        flat = np.asarray(data["inputs"], np.float32).reshape(-1, self.inputs.shape[-1])
        table, inverse = np.unique(flat, axis=0, return_inverse=True)
        self.input_table = t(table)
        self.input_index = torch.as_tensor(inverse.reshape(self.inputs.shape[:2]), device=device)
        self.n_conditions = int(data["conditions"].max()) + 1
        self.train_idx, self.val_idx = np.asarray(data["train_idx"]), np.asarray(data["val_idx"])
        self.ei_labels = np.asarray(data["ei_labels"])
        self.model_config = {"n_inputs": int(self.inputs.shape[-1]), "n_outputs": int(self.outputs.shape[-1]),
                             "ei_labels": [int(x) for x in self.ei_labels],
                             **{k: cfg["model"][k] for k in MODEL_KEYS}}
        self.model = build_model(self.model_config).to(device)
        self._last_batch = None
        vi = torch.as_tensor(self.val_idx, device=device)
        self.val_target_psth = self._psth(self.spikes[vi], self.conditions[vi])

    def _psth(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return condition_psth(x, cond, self.n_conditions)

    def _batch(self, idx: np.ndarray) -> tuple:
        """The trials ``idx`` as tensors: index, conditions, target outputs, the target PSTH and
        the data side of L_trial. Full-batch training asks for the same trials every epoch: the
        last batch is kept and reused when ``idx`` is the same."""
        key = np.asarray(idx).tobytes()
        if self._last_batch is None or self._last_batch[0] != key:
            i = torch.as_tensor(idx, device=self.device)
            spikes, cond = self.spikes.index_select(0, i), self.conditions.index_select(0, i)
            self._last_batch = (key, (i, cond, self.outputs.index_select(0, i), self._psth(spikes, cond),
                                      trial_targets(spikes, cond, self.n_conditions)))
        return self._last_batch[1]

    def losses(self, idx: np.ndarray) -> dict:
        """The four loss terms on the trials ``idx`` (tensor graphs, not yet weighted), and the
        model's rates [B, T, N] they were computed from."""
        i, cond, outputs_target, pd, targets = self._batch(idx)
        rates, outputs = self._run(i)
        pm = self._psth(rates, cond)
        lc = self.loss_cfg
        return {"L_neuron": neuron_loss(pm, pd),
                "L_trial": trial_loss(rates, targets),
                "L_reg": reg_loss(self.model, pm, pd, lc["lambda_reg"], lc["lambda_scale"], lc["lambda_var"]),
                "L_output": output_loss(outputs, outputs_target)}, rates

    def train_epoch(self, np_rng: np.random.Generator, step) -> dict:
        order = np_rng.permutation(self.train_idx)
        bs = self.batch_size or len(order)
        sums: dict[str, float] = {}
        n_batches = 0
        for start in range(0, len(order), bs):
            idx = np.sort(order[start:start + bs])
            L, rates = self.losses(idx)
            rest = L["L_reg"] + self.loss_cfg["lambda_output"] * L["L_output"]
            w = self.loss_cfg["ltrial_scale"]
            if self.loss_cfg["use_grad_balancing"]:
                # Balance L_trial against L_neuron by their gradient norms at the shared
                # representation (the rates), as GradNorm does at the last shared layer.
                g_n, = torch.autograd.grad(L["L_neuron"], rates, retain_graph=True)
                g_t, = torch.autograd.grad(L["L_trial"], rates, retain_graph=True)
                w = w * float(g_n.norm() / g_t.norm().clamp_min(1e-12))
            total = L["L_neuron"] + w * L["L_trial"] + rest
            self.model.zero_grad(set_to_none=True)
            total.backward()
            step()
            for k, v in {**L, "train_loss": total.detach(), "trial_weight": torch.tensor(w)}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_batches += 1
        return {k: v / n_batches for k, v in sums.items()}

    def _run(self, i: torch.Tensor, generator: torch.Generator | None = None):
        # index_select, not advanced indexing: the backward of x[idx] accumulates with torch's
        # index_put_, whose order on 2+ CPU threads varies from run to run (measured: the
        # attention embedding differed after one epoch at the default size); index_select's
        # backward (index_add_) is deterministic and gives the same gradients
        table = self.model.input_drive(self.input_table)
        idx = self.input_index[i]
        drive = table.index_select(0, idx.reshape(-1)).reshape(*idx.shape, table.shape[-1])
        return self.model.dynamics(drive, noise=True, generator=generator)

    def simulate(self, idx: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Model rates and outputs on trials ``idx`` with a fixed noise seed (eval mode)."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        return self._run(torch.as_tensor(idx, device=self.device), g)

    def evaluate(self) -> dict:
        rates, _ = self.simulate(self.val_idx, self.eval_seed)
        pm = self._psth(rates, self.conditions[torch.as_tensor(self.val_idx, device=self.device)])
        corr = _per_neuron_corr(pm, self.val_target_psth)
        return {"val_loss": float(neuron_loss(pm, self.val_target_psth).detach()), "val_correlation": float(corr.mean().detach())}

    def detail(self) -> dict:
        from neurotrain.stats import fano_factor  # numpy only

        vi = torch.as_tensor(self.val_idx, device=self.device)
        rates, _ = self.simulate(self.val_idx, self.eval_seed)
        corr = _per_neuron_corr(self._psth(rates, self.conditions[vi]), self.val_target_psth).cpu().numpy()
        g = torch.Generator(device=self.device).manual_seed(self.eval_seed + 1)
        counts = torch.poisson(rates, generator=g).cpu().numpy()
        cond = self.conditions[vi].cpu().numpy()
        wb = self.fano_window
        h0 = self.model.h0.detach().cpu().numpy()
        e = self.ei_labels == 0
        return {"per_neuron_correlations": corr.tolist(), "E_mean_corr": float(corr[e].mean()),
                "I_mean_corr": float(corr[~e].mean()),
                "h0_stats": {"mean": float(h0.mean()), "std": float(h0.std()), "min": float(h0.min()), "max": float(h0.max())},
                "fano_model": float(np.nanmean(fano_factor(counts, cond, wb))),
                "fano_real": float(np.nanmean(fano_factor(self.spikes[vi].cpu().numpy(), cond, wb)))}

    def format_detail(self, d: dict) -> list[str]:
        n_e, n_i = int((self.ei_labels == 0).sum()), int((self.ei_labels == 1).sum())
        return [f"E neurons: mean_corr={d['E_mean_corr']:.3f} (n={n_e})",
                f"I neurons: mean_corr={d['I_mean_corr']:.3f} (n={n_i})",
                f"Fano factor: model={d['fano_model']:.2f}, real={d['fano_real']:.2f}",
                f"h0: mean={d['h0_stats']['mean']:.2f}, std={d['h0_stats']['std']:.2f}"]


def _per_neuron_corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per neuron (last axis) over all other axes."""
    a = a.reshape(-1, a.shape[-1])
    b = b.reshape(-1, b.shape[-1])
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = torch.sqrt((a**2).sum(0) * (b**2).sum(0))
    return torch.where(den > 0, (a * b).sum(0) / den.clamp_min(1e-12), torch.zeros_like(den))


def run_training(cfg: dict, data_path: str, out_dir: str, threads: int = 0) -> dict:
    """Stage ``train``: fit the E-I RNN to the processed dataset; see ``training.torch_loop``."""
    from pathlib import Path

    from neurotrain.systems.ei_rnn.data import load_processed
    from neurotrain.errors import NeurotrainError
    from neurotrain.io import sha256_file
    from neurotrain.training.checkpoint import run_preamble
    from neurotrain.training.runstate import versions
    from neurotrain.training.torch_loop import LoopConfig, train

    tc = cfg["training"]
    data = load_processed(data_path)
    data_dt_ms = data["dt"] * 1000.0
    if abs(data_dt_ms - cfg["model"]["dt"]) > 1e-6 * max(1.0, data_dt_ms):
        raise NeurotrainError("config key ei_rnn.model.dt",
                              f"{cfg['model']['dt']} ms does not match the data's bin width {data_dt_ms:g} ms ({data_path})")
    device = run_preamble("ei_rnn", tc, threads)  # model initialisation is seeded
    task = EIRNNTask(data, cfg, device, eval_seed=tc["seed"] + 1)
    out = Path(out_dir)
    data_sha = sha256_file(data_path)
    record = {k: cfg[k] for k in ("data", "model", "loss", "training")}
    run_record = {"system": "ei_rnn", "model_config": task.model_config, "device": str(device),
                  "data": str(data_path), "data_sha256": data_sha, "n_train_trials": len(task.train_idx),
                  "n_val_trials": len(task.val_idx),
                  "versions": versions(torch, np)}
    loop = LoopConfig(max_epochs=tc["max_epochs"], patience=tc["patience"], learning_rate=tc["learning_rate"],
                      lr_factor=tc["lr_factor"], lr_patience=tc["lr_patience"], min_lr=tc["min_lr"],
                      gradient_clip=tc["gradient_clip"], seed=tc["seed"], checkpoint_every=tc["checkpoint_every"],
                      log_every=tc["log_every"], detail_every=tc["detail_every"])
    return train(task, loop, out, record, data_sha, run_record)
