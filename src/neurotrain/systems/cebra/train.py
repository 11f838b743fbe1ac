"""CEBRA multi-session contrastive embedding (seed: cebra-multisession-training.md), run with
the ``cebra`` package's own model, datasets, loader, criterion and solver. One session is a
valid dataset too: it is trained with CEBRA's single-session solver and loader. With
``training.batch_encoding`` ``auto`` or ``session``, the solver's step encodes each session once
and reads the sampled windows' embeddings from it (:mod:`neurotrain.systems.cebra.encoding`):
the same embeddings, about twice as fast on sessions the batch covers.

``model.sharing``:
  ``shared``       one ``offset10-model`` for every session (the seed); its input dimension is
                   the first session's neuron count, and sessions with another count are refused.
  ``per_session``  CEBRA's standard multi-session setting: one encoder per session (any neuron
                   counts), trained jointly so that the embeddings share one space.

Training state: ``model/checkpoints/last.pt`` and ``step{N}.pt`` (solver state dict, step, every
RNG state, in the layout of :class:`neurotrain.training.runstate.CheckpointDir`) are written
every ``checkpoint_every`` steps, ``last.pt`` also on SIGINT/SIGTERM; a rerun resumes from the
newest usable one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import cebra
import cebra.data
import cebra.distributions
import cebra.models
import cebra.solver

from neurotrain.training import torch_numerics  # noqa: F401  (sets up MKL's vector math before any threaded call)
from neurotrain.errors import Interrupted, NeurotrainError
from neurotrain.systems.cebra.encoding import use_session_encoding
from neurotrain.io import save_json, sha256_file
from neurotrain.training.checkpoint import (load_checkpoint, rng_state, run_preamble, save_checkpoint,
                                           set_rng_state)
from neurotrain.training.runstate import CheckpointDir, SignalGuard, fingerprint, versions

log = logging.getLogger("neurotrain.train.cebra")


def build_models(model_config: dict) -> nn.ModuleList:
    """One encoder per session, as a ``ModuleList`` (the multi-session solver's layout); with
    ``sharing: shared`` every entry is the same module."""
    m = model_config
    n_features = m["n_features"]
    if m["sharing"] == "shared":
        encoder = cebra.models.init(m["architecture"], num_neurons=n_features[0], num_units=m["num_units"],
                                    num_output=m["output_dim"])
        return nn.ModuleList([encoder] * len(n_features))
    return nn.ModuleList([cebra.models.init(m["architecture"], num_neurons=n, num_units=m["num_units"],
                                            num_output=m["output_dim"]) for n in n_features])


def check_sharing(names: list[str], n_features: list[int], sharing: str, where) -> None:
    """The shared model takes its input size from the first session; refuse other sizes."""
    if sharing == "shared":
        bad = [f"{n} ({k} neurons)" for n, k in zip(names, n_features) if k != n_features[0]]
        if bad:
            raise NeurotrainError(where, f"model.sharing 'shared' needs every session to have {n_features[0]} neurons "
                                         f"like {names[0]}, but: {', '.join(bad)}; use sharing 'per_session'")


def make_datasets(sessions: list[dict], part: str = "train_idx", device: str = "cpu") -> cebra.data.DatasetCollection:
    """A ``DatasetCollection`` of ``TensorDataset``s (spikes, continuous behaviour) of one split."""
    # a generator: CEBRA's DatasetCollection takes one dataset only that way
    return cebra.data.DatasetCollection(
        cebra.data.TensorDataset(torch.as_tensor(s["spikes"][s[part]]), continuous=torch.as_tensor(s["behavior"][s[part]]),
                                 device=device)
        for s in sessions)


class RowMajorIndex(cebra.distributions.ContinuousIndex):
    """CEBRA's nearest-neighbour search for positive samples (``ContinuousIndex``), with its
    distance matrix laid out query-major: the same squared distances, element by element
    (``|x|^2 + |q|^2 - 2 x.q``), and ``argmin`` over contiguous rows instead of down the columns
    of an index-major matrix, which took most of the loader's time (40 ms per step for 3
    sessions x 512 samples; 18 ms this way). The first minimum wins in both, so the positives are
    the ones CEBRA's own loader draws (bit for bit with 1-D behaviour; test_cebra checks it)."""

    def search(self, query: torch.Tensor) -> torch.Tensor:
        d = self.dist_matrix
        query = query.to(d.index.device)
        xTq = torch.einsum("mi,ni->mn", query, d.index)
        return torch.argmin(d.xTx.T + query.square().sum(1, keepdim=True) - 2 * xTq, dim=1)


def make_loader(collection, num_steps: int, t: dict):
    """CEBRA's multi-session continuous loader, its positive-sample search replaced by
    :class:`RowMajorIndex` (same draws, faster); CEBRA's single-session continuous loader when
    there is one session."""
    if collection.num_sessions == 1:
        return cebra.data.ContinuousDataLoader(collection.get_session(0), num_steps=num_steps,
                                               batch_size=t["batch_size"], conditional=t["conditional"],
                                               time_offset=t["time_offset"])
    loader = cebra.data.ContinuousMultiSessionDataLoader(
        collection, num_steps=num_steps, batch_size=t["batch_size"], conditional=t["conditional"],
        time_offset=t["time_offset"])
    for index in loader.sampler.index:
        index.__class__ = RowMajorIndex  # a subclass that only overrides search()
    return loader


def make_solver(models: nn.ModuleList, cfg: dict, tqdm_on: bool = True):
    """CEBRA's multi-session solver over the encoders, or its single-session solver when there
    is one session (the multi-session model needs two or more)."""
    t = cfg["training"]
    single = len(models) == 1
    return cebra.solver.init(name="single-session" if single else "multi-session", model=models[0] if single else models,
                             criterion=cebra.models.criterions.FixedCosineInfoNCE(temperature=t["temperature"]),
                             optimizer=torch.optim.Adam(models.parameters(), lr=t["learning_rate"]), tqdm_on=tqdm_on)


def run_training(cfg: dict, data_path: str, out_dir: str, threads: int = 0) -> dict:
    """Stage ``train``: fit CEBRA on the training part of every session.

    Writes ``model_final.pt`` ({"solver": solver.state_dict(), "model_config", "config", "step"};
    ``model_best.pt`` is the same, as CEBRA trains a fixed number of steps without validation),
    ``training_log.json`` (per-step ``total``/``pos``/``neg``/``temperature`` and the goodness of
    fit in bits) and ``config.json`` into ``out_dir``.
    """
    from neurotrain.systems.cebra.data import load_processed

    data = load_processed(data_path)
    m, t = cfg["model"], cfg["training"]
    n_features = [int(s["spikes"].shape[1]) for s in data["sessions"]]
    check_sharing(data["names"], n_features, m["sharing"], data_path)
    # threads, device, and the seed of the models and of CEBRA's sampler (numpy and torch global RNGs)
    device = run_preamble("cebra", t, threads).type
    model_config = {"architecture": m["architecture"], "num_units": m["num_units"], "output_dim": m["output_dim"],
                    "sharing": m["sharing"], "n_features": n_features, "session_names": data["names"]}
    models = build_models(model_config).to(device)
    collection = make_datasets(data["sessions"], device=device)
    collection.to(device)  # the loader, and so the solver, take their device from the data
    if collection.num_sessions == 1:
        collection.get_session(0).configure_for(models[0])
    else:
        collection.configure_for(models)
    receptive = len(models[0].get_offset())
    gap = min(int(s["test_idx"][0] - s["train_idx"][-1] - 1) for s in data["sessions"])
    if gap < receptive - 1:
        raise NeurotrainError("config key cebra.data.split_gap", f"{gap} bins between the training and held-out parts "
                                                                  f"are fewer than the model's receptive field "
                                                                  f"({receptive} bins) spans; set it to {receptive}")
    for name, s in zip(data["names"], data["sessions"]):
        if len(s["train_idx"]) <= receptive:
            raise NeurotrainError(data_path, f"session {name}: {len(s['train_idx'])} training bins, not more than the "
                                             f"model's receptive field ({receptive} bins)")
    solver = make_solver(models, cfg, tqdm_on=True)
    use_session_encoding(t["batch_encoding"], solver, collection, models, t["batch_size"])
    np_rng = np.random.default_rng(t["seed"])  # unused by CEBRA; kept so rng_state has one format

    out = Path(out_dir)
    data_sha = sha256_file(data_path)
    record = {k: cfg[k] for k in ("model", "training")}  # the data enter through their sha256
    fp = fingerprint(record, data_sha, models.state_dict())
    ckpts = CheckpointDir(out, fp, "pt", save_checkpoint, load_checkpoint, periodic="step",
                          outputs=("model_best.pt", "model_final.pt", "training_log.json", "config.json"))

    def fits(state: dict) -> None:
        if not {"solver", "rng", "progress"} <= set(state):
            raise NeurotrainError("checkpoint", "checkpoint does not fit this run (not a CEBRA solver state)")
        if state["progress"]["step"] > t["max_steps"]:  # max_steps lowered since: an older state, or fresh
            raise NeurotrainError("checkpoint", f"it is at step {state['progress']['step']}, past max_steps "
                                                f"{t['max_steps']}")

    resume = ckpts.begin(fits)
    done = int(resume["progress"]["step"]) if resume else 0
    elapsed = float(resume["progress"]["elapsed"]) if resume else 0.0
    # The loader is built at the same point of the random streams in a fresh and in a resumed
    # run; the saved streams are restored after it, so the resumed run draws what the
    # uninterrupted one would have.
    loader = make_loader(collection, max(t["max_steps"] - done, 1), t)
    if resume is not None:
        solver.load_state_dict(resume["solver"])
        set_rng_state(resume["rng"], np_rng)
        log.info("Resuming at step %d", done)
    t0 = time.perf_counter() - elapsed

    def state(step: int) -> dict:
        return {"progress": {"step": step, "elapsed": time.perf_counter() - t0}, "solver": solver.state_dict(),
                "rng": rng_state(np_rng), "model_config": model_config, "config": record}

    remaining = t["max_steps"] - done
    with SignalGuard() as guard:
        def hook(num_steps: int, _solver) -> None:
            step = done + num_steps + 1
            if step % t["checkpoint_every"] == 0:
                ckpts.save(state(step), index=step)
            if guard.signum is not None:
                ckpts.save(state(step))
                log.warning("Interrupted at step %d; state saved to %s. Rerun the same target to resume.", step,
                            ckpts.last)
                raise Interrupted(guard.signum)

        if remaining > 0:
            solver.fit(loader, save_frequency=1, save_hook=hook)
    total_time = time.perf_counter() - t0

    losses = np.asarray(solver.log["total"], dtype=np.float64)
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"InfoNCE loss is not finite at step {int(np.argmin(np.isfinite(losses))) + 1}")
    from cebra.integrations.sklearn.metrics import infonce_to_goodness_of_fit

    gof = infonce_to_goodness_of_fit(losses, batch_size=t["batch_size"], num_sessions=len(n_features))
    history = {"step": list(range(1, len(losses) + 1)), **{k: [float(v) for v in solver.log[k]] for k in ("total", "pos", "neg")},
               "temperature": [float(v) for v in solver.log["temperature"]], "goodness_of_fit_bits": gof.tolist()}
    summary = {"steps": len(losses), "final_loss": float(np.mean(losses[-50:])), "final_goodness_of_fit_bits": float(np.mean(gof[-50:])),
               "training_time_s": total_time, "steps_per_s": len(losses) / total_time if total_time > 0 else None,
               "resumed_from_step": done or None}
    final = {"solver": solver.state_dict(), "model_config": model_config, "config": record, "step": len(losses),
             "fingerprint": fp}
    save_checkpoint(out / "model_final.pt", final)
    save_checkpoint(out / "model_best.pt", final)  # no validation set: the best model is the final one
    save_json(out / "training_log.json", {"history": history, "summary": summary})
    save_json(out / "config.json", {"system": "cebra", "config": record, "model_config": model_config, "device": device,
                                    "data": str(data_path), "data_sha256": data_sha, "fingerprint": fp,
                                    "versions": versions(cebra, torch, np)})
    ckpts.finish()
    log.info("CEBRA training complete: %d steps, InfoNCE %.4f, goodness of fit %.2f bits, %.0f s (%.2f steps/s)",
             len(losses), summary["final_loss"], summary["final_goodness_of_fit_bits"], total_time,
             summary["steps_per_s"] or 0.0)
    return summary
