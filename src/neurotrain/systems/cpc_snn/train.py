"""CPC + spiking-network gravitational-wave detector: the three training phases.

1. CPC pre-training: the encoder (convolutions, GRU context, predictors) learns by InfoNCE
   on the unlabelled training strain (every training segment, labels unused).
2. SNN training: the encoder is frozen; the spike bridge and the SNN classifier learn the
   detection task (cross-entropy).
3. Joint fine-tuning (``training.phase3.enabled``): everything trains on
   ``cpc_weight * CPC + classification_weight * cross-entropy``.

Detection phases train by *injection*: each example is a noise-only training segment,
circularly shifted by a random offset (whitened noise is stationary, so a shift is another
noise realisation), plus, with probability 1/2, a whitened chirp of the same family with random
chirp mass, coalescence time, phase and SNR (from the training split's ASD). Fixed training
sets of a few thousand segments are memorised in a few epochs; fresh injections are not.
An SNR curriculum (George & Huerta 2018) scales the SNRs by ``curriculum.snr_scale`` at the
first detection step, decaying linearly to 1 over ``curriculum.steps`` steps: deep spiking
layers do not leave the chance-level plateau on the weak signals alone.

With ``training.soft_labels.weight`` w > 0 the target of each example is ``(1 - w) label + w
P(chirp | x)``, the Bayes posterior under the injector's own model
(:class:`~neurotrain.systems.cpc_snn.waveforms.ChirpPosterior`, at the curriculum's SNR
scale): near the threshold a 0/1 label is a coin flip the network cannot learn from, and the
posterior is its expectation. Validation keeps the stored 0/1 labels; the posterior's own
validation cross-entropy, the floor of the SNN's, goes into the run record.

Validation and test use the stored segments of those splits, never injections made here.
``model_best`` is the detection epoch with the highest true-positive rate at the quality bar's
false-alarm probability on the validation segments (``training.select_on``): the bar's own
measure, chosen without the test segments, which only the analysis reads. The activity
regulariser (``training.activity``) penalises a hidden LIF layer whose mean rate falls below
``min_rate`` spikes per unit and frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from neurotrain.systems.cpc_snn import data as gw
from neurotrain.systems.cpc_snn import waveforms as wf

log = logging.getLogger("neurotrain.train")


class Injector:
    """Training examples: shifted noise segments with fresh whitened chirps in half of them."""

    def __init__(self, asd: np.ndarray, attrs: dict, inj: dict, n_masses: int):
        N = (len(asd) - 1) * 2
        self.masses = wf.chirp_masses(inj, n_masses)
        self.end, cos, sin = wf.quadrature_templates(asd, attrs, inj, self.masses)
        self.first = int(round(inj["tc_min"] * N))
        self.cos, self.sin = cos.astype(np.float32), sin.astype(np.float32)
        self.inj = inj

    def batch(self, noise: np.ndarray, n: int, rng: np.random.Generator, snr_scale: float = 1.0):
        N = noise.shape[1]
        pick = rng.integers(0, len(noise), n)
        shift = rng.integers(0, N, n)
        y = (rng.random(n) < 0.5).astype(np.int32)
        m = rng.integers(0, len(self.masses), n)
        ph = rng.uniform(0, 2 * np.pi, n)
        snr = rng.uniform(self.inj["snr_min"], self.inj["snr_max"], n) * snr_scale * y
        lag = rng.integers(self.first - self.end, 1, n)
        cols = np.arange(N)
        x = noise[pick[:, None], (cols[None, :] - shift[:, None]) % N]
        sig = np.cos(ph)[:, None] * self.cos[m] + np.sin(ph)[:, None] * self.sin[m]
        x += (snr[:, None] * sig[np.arange(n)[:, None], (cols[None, :] - lag[:, None]) % N])
        return x.astype(np.float32), y


class CpcSnnTask:
    """What the JAX phase loop needs: parameters, batches, the loss and validation."""

    def __init__(self, data: dict, cfg: dict, det):
        import jax

        self.cfg, t = cfg, cfg["training"]
        self.det = det
        split, label = data["split"], data["label"]
        x = data["strain"]
        self.train_x = x[split == 0]
        self.noise = x[(split == 0) & (label == 0)]
        self.val_x, self.val_y = x[split == 1], label[split == 1].astype(np.int32)
        if len(self.noise) == 0:
            raise ValueError("the training split has no noise-only segments to inject into")
        if len(self.val_x) == 0 or len(set(self.val_y.tolist())) < 2:
            raise ValueError("the validation split needs noise and chirp segments")
        self.micro, self.accum = t["micro_batch"], t["accumulate"]
        if len(self.val_x) < self.micro:
            raise ValueError(f"{len(self.val_x)} validation segments are fewer than one micro-batch ({self.micro}): "
                             f"the validation InfoNCE is computed per micro-batch, as in training")
        if len(self.train_x) < self.micro * self.accum:
            raise ValueError(f"{len(self.train_x)} training segments are fewer than one batch "
                             f"({self.micro} x {self.accum})")
        self.injector = Injector(data["asd_whiten"], data["attrs"], cfg["data"]["injection"], t["injection_masses"])
        self.curriculum = t["curriculum"]
        self.soft = t["soft_labels"]["weight"]
        self.posterior = (wf.ChirpPosterior(data["asd_whiten"], data["attrs"], cfg["data"]["injection"],
                                            t["soft_labels"]["templates"]) if self.soft else None)
        if self.soft and data["attrs"].get("source") != "embedded":
            log.warning("training.soft_labels: the Bayes posterior assumes Gaussian noise; in %s strain a glitch "
                        "looks like a chirp to it, and the SNN learns to fire on glitches (weight 0: the labels only)",
                        data["attrs"].get("source"))
        # optimizer steps of phase 1: the curriculum counts detection steps after them
        self.cpc_epoch_steps = len(self.train_x) // (self.micro * self.accum)
        self.cpc_steps = self.cpc_epoch_steps * t["phase1"]["epochs"]
        self._cpc = jax.jit(lambda p, xb: self.det.encoder.cpc_loss(p, self.det.encoder.apply(p, xb)))
        self.fap = cfg["analysis"]["bar_fap"]
        self.activity = t["activity"]
        n_noise = int((self.val_y == 0).sum())
        if t["select_on"] == "tpr_at_fap" and n_noise * self.fap < 10:
            log.warning("the validation split holds %d noise segments: at FAP %g the threshold that picks "
                        "model_best rests on %.1f of them (raise data.val_fraction or data.embedded.n_segments)",
                        n_noise, self.fap, n_noise * self.fap)

    def posterior_floor(self) -> float | None:
        """The posterior's own cross-entropy on the validation labels (None without soft labels):
        the Bayes-optimal detector's, the lowest the SNN's validation cross-entropy can reach."""
        if self.posterior is None:
            return None
        q = np.clip(self.posterior(self.val_x).astype(np.float64), 1e-12, 1 - 1e-12)
        ce = float(-np.mean(self.val_y * np.log(q) + (1 - self.val_y) * np.log(1 - q)))
        log.info("soft labels: the Bayes posterior's validation cross-entropy is %.4f, the floor of the SNN's", ce)
        return ce

    def init_params(self, key):
        return self.det.init(key)

    def steps_per_epoch(self, phase) -> int:
        if phase.name == "cpc":
            return self.cpc_epoch_steps
        return self.cfg["training"][phase.name]["steps_per_epoch"]

    def snr_scale(self, detect_step: int) -> float:
        c = self.curriculum
        if c["steps"] <= 0:
            return 1.0
        return float(max(1.0, c["snr_scale"] - (c["snr_scale"] - 1.0) * detect_step / c["steps"]))

    def batches(self, phase, rng, global_step):
        per = self.micro * self.accum
        steps = self.steps_per_epoch(phase)
        if phase.name == "cpc":
            order = rng.permutation(len(self.train_x))
            for i in range(steps):
                b = np.sort(order[i * per:(i + 1) * per])
                x = self.train_x[b].reshape(self.accum, self.micro, -1)
                yield x, np.zeros((self.accum, self.micro), np.int32)
            return
        for i in range(steps):
            scale = self.snr_scale(global_step + i - self.cpc_steps)
            x, y = self.injector.batch(self.noise, per, rng, scale)
            if self.posterior is not None:
                y = ((1.0 - self.soft) * y + self.soft * self.posterior(x, scale)).astype(np.float32)
            yield x.reshape(self.accum, self.micro, -1), y.reshape(self.accum, self.micro)

    def loss(self, params, x, y, weights):
        return self.det.losses(params, x, y, weights["cpc"], weights["classification"],
                               self.activity["weight"] if weights["classification"] else 0.0, self.activity["min_rate"])

    def evaluate(self, params, phase) -> dict:
        import jax.numpy as jnp

        from neurotrain.stats import roc_auc, tpr_at_fap

        out = {}
        if phase.weights["cpc"]:
            # in micro-batches, as in training: InfoNCE's chance level ln(micro_batch + frames - 1)
            # depends on the batch, and train and validation losses are then comparable
            n = max(1, 512 // self.micro) * self.micro
            sub = self.val_x[:n]
            vals = [self._cpc(params["encoder"], jnp.asarray(sub[i:i + self.micro]))
                    for i in range(0, len(sub) - self.micro + 1, self.micro)]  # __init__: >= one micro-batch
            out["cpc_loss"] = float(np.mean([float(v[0]) for v in vals]))
            out["cpc_accuracy"] = float(np.mean([float(v[1]) for v in vals]))
        if phase.weights["classification"]:
            # one forward pass gives the cross-entropy, the accuracy and the detection statistic
            logits = self.det.logits(params, self.val_x).astype(np.float64)
            top = logits.max(1, keepdims=True)
            logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
            out["classification_loss"] = float(-logp[np.arange(len(logits)), self.val_y].mean())
            out["accuracy"] = float((logits.argmax(1) == self.val_y).mean())
            scores = logits[:, 1] - logits[:, 0]
            out["auc"] = float(roc_auc(scores, self.val_y))
            out["tpr_at_fap"] = float(tpr_at_fap(scores, self.val_y, self.fap))
            out["miss_rate_at_fap"] = 1.0 - out["tpr_at_fap"]  # lower is better: the monitor of select_on
            if np.ptp(scores) == 0:
                log.warning(
                    "%s: the SNN gives every validation segment the same score (a LIF layer is silent or fires "
                    "on every frame): training has collapsed, and model_best keeps the epoch with the lowest "
                    "validation cross-entropy. A lower learning rate for this phase may avoid it", phase.name)
        return out


def phases_from_config(cfg: dict):
    from neurotrain.training.jax_loop import Phase

    t = cfg["training"]
    p1, p2, p3 = t["phase1"], t["phase2"], t["phase3"]
    monitor = {"tpr_at_fap": "miss_rate_at_fap", "classification_loss": "classification_loss"}[t["select_on"]]
    phases = [
        Phase("cpc", "CPC pre-training", ("encoder",), {"cpc": 1.0, "classification": 0.0}, p1["epochs"],
              p1["learning_rate"], p1["schedule"], p1["warmup_steps"], None),
        Phase("phase2", "SNN training (encoder frozen)", ("bridge", "snn"), {"cpc": 0.0, "classification": 1.0},
              p2["epochs"], p2["learning_rate"], p2["schedule"], p2["warmup_steps"], monitor),
    ]
    if p3["enabled"]:
        phases.append(Phase("phase3", "joint fine-tuning", ("encoder", "bridge", "snn"),
                            {"cpc": t["cpc_weight"], "classification": t["classification_weight"]}, p3["epochs"],
                            p3["learning_rate"], p3["schedule"], p3["warmup_steps"], monitor))
    return phases


def run_training(cfg: dict, data_path: str, out_dir: str, threads: int = 0) -> dict:
    """Stage ``train``: the three phases; writes ``model_best.npz``, ``model_final.npz``,
    ``training_log.json``, ``config.json`` and ``checkpoints/`` under ``out_dir``."""
    import jax
    import optax

    from neurotrain.errors import NeurotrainError
    from neurotrain.io import sha256_file
    from neurotrain.systems.cpc_snn.network import Detector
    from neurotrain.training.jax_loop import LoopConfig, PhaseTrainer
    from neurotrain.training.runstate import versions

    try:  # the model's own checks of its sizes, before anything is read or written
        det = Detector.from_config(cfg["model"])
    except ValueError as exc:
        raise NeurotrainError("config key cpc_snn.model", str(exc)) from None
    data = gw.load_processed(data_path)
    if data["strain"].shape[1] < gw.min_segment_samples(cfg):
        raise NeurotrainError(data_path, f"segments of {data['strain'].shape[1]} samples are shorter than the CPC "
                                         f"encoder's receptive field plus its prediction horizon "
                                         f"({gw.min_segment_samples(cfg)} samples)")
    t = cfg["training"]
    phases = phases_from_config(cfg)
    try:
        task = CpcSnnTask(data, cfg, det)
    except ValueError as exc:
        raise NeurotrainError(data_path, str(exc)) from None
    data_sha = sha256_file(data_path)
    floor = task.posterior_floor()
    record = {k: cfg[k] for k in ("model", "training")}
    run_record = {"system": "cpc_snn", "device": str(jax.devices()[0]), "data": str(data_path), "data_sha256": data_sha,
                  "n_train_segments": int(len(task.train_x)), "n_noise_segments": int(len(task.noise)),
                  "n_val_segments": int(len(task.val_x)),
                  "versions": versions(jax, optax, np)}
    if floor is not None:
        run_record["soft_labels_val_classification_loss"] = floor
    loop = LoopConfig(seed=t["seed"], accumulate=t["accumulate"], gradient_clip=t["gradient_clip"],
                      checkpoint_every=t["checkpoint_every"], ema_decay=t["ema_decay"])
    return PhaseTrainer(task, phases, loop, Path(out_dir), record, data_sha, run_record).train()


def load_params(path: str | Path, cfg: dict):
    """(Detector, parameters) from ``model_best.npz`` / ``model_final.npz``."""
    import jax

    from neurotrain.systems.cpc_snn.network import Detector
    from neurotrain.training.jax_loop import load_npz, unflatten

    det = Detector.from_config(cfg["model"])
    arrays, meta = load_npz(path)
    return det, unflatten(det.init(jax.random.PRNGKey(0)), arrays, str(path)), meta


# --------------------------------------------------------------------------- the seed's API
class UnifiedTrainer:
    """The seed's interface over the functional phases: ``UnifiedTrainer(cpc_encoder=...,
    spike_bridge=..., snn_classifier=..., learning_rate=1e-4, cpc_weight=1.0,
    classification_weight=1.0).train(train_signals, train_labels, num_epochs=10)`` runs the
    composite loss on real mini-batches and returns ``(params, {"final_loss": ...})`` with
    ``params = (cpc_params, classifier_params, spike_bridge_params)`` as in the seed."""

    def __init__(self, cpc_encoder, spike_bridge, snn_classifier, learning_rate: float = 1e-4,
                 cpc_weight: float = 1.0, classification_weight: float = 1.0, batch_size: int = 32):
        from dataclasses import replace

        from neurotrain.systems.cpc_snn.network import Detector

        # the components as given, sized to each other (the bridge to the encoder's features, the
        # SNN's input to the bridge's spikes)
        bridge = replace(spike_bridge, latent_dim=cpc_encoder.feature_dim(spike_bridge.features))
        snn = replace(snn_classifier, hidden_sizes=tuple(snn_classifier.hidden_sizes), input_dim=bridge.out_dim)
        self.det = Detector(cpc_encoder, bridge, snn)
        self.learning_rate, self.batch_size = learning_rate, batch_size
        self.weights = {"cpc": cpc_weight, "classification": classification_weight}

    def train(self, train_signals, train_labels, num_epochs: int = 10, key=None):
        import jax
        import jax.numpy as jnp
        import optax

        key = jax.random.PRNGKey(0) if key is None else key
        x, y = np.asarray(train_signals, np.float32), np.asarray(train_labels, np.int32)
        params = self.det.init(key)
        opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(self.learning_rate))
        opt_state = opt.init(params)
        w = self.weights

        @jax.jit
        def step(p, s, xb, yb):
            (loss, aux), g = jax.value_and_grad(self.det.losses, has_aux=True)(p, xb, yb, w["cpc"], w["classification"])
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s, loss

        rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2 ** 31 - 1)))
        avg = float("nan")
        for epoch in range(num_epochs):
            order = rng.permutation(len(x))
            losses = []
            for i in range(0, len(order), self.batch_size):
                b = order[i:i + self.batch_size]
                params, opt_state, loss = step(params, opt_state, jnp.asarray(x[b]), jnp.asarray(y[b]))
                losses.append(float(loss))
            avg = float(np.mean(losses))
            print(f"Epoch {epoch + 1}/{num_epochs} | Loss: {avg:.4f}")
        return (params["encoder"], params["snn"], params["bridge"]), {"final_loss": avg}
