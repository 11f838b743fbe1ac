"""Extract the detector's parameters, test-set scores, spikes and CPC latents from
``model_best.npz`` (the detection epoch of phases 2-3 chosen on the validation segments by
``training.select_on``; by default the highest TPR at the quality bar's FAP).

``weights/``: one ``.npy`` per parameter, named by its path (``encoder.conv.0.w.npy`` [k, in,
out], ``encoder.gru.wx.npy`` [latent, 3 context], ``encoder.predict.npy`` [steps, context,
latent], ``bridge.gain.npy`` [features], ``snn.layers.0.w.npy`` [delay taps, 2 features, hidden0], ...,
``snn.readout.w.npy`` [hidden_last, 2]).

``export/``: ``detector.npz`` (the same parameters under paths such as ``encoder/conv/0/w``) and
``detector.json`` (the model config and the input it expects), read back by
``neurotrain.systems.cpc_snn.network.load_detector``.

``outputs/`` (test split, n segments, in file order):
  test_index.npy [n] int64          row in the processed HDF5
  scores.npy [n] float32            SNN detection statistic logit(chirp) - logit(noise)
  labels.npy [n] int8, snr.npy [n] float32, chirp_mass.npy [n] float32
  spike_counts_layer{L}.npy [n, units] int16   spikes per segment: L=0 the bridge, 1.. the
                                               LIF layers
  raster_layer{L}.npy [k, T, units] uint8      spike trains of ``spike_examples`` segments
  raster_index.npy [k] int64                   their rows in the test arrays
  latents.npy [m, T, latent] float32           CPC latent frames of the first m <= 512 test segments
  frame_rate.npy [] float64                    latent frames per second
``outputs/`` (validation split, its v noise-only segments; apply sets its thresholds on them):
  val_noise_index.npy [v] int64    row in the processed HDF5
  val_noise_scores.npy [v] float32 SNN detection statistic
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.systems.cpc_snn import data as gw
from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_dir, save_npy


def extract(cfg: dict, model_dir: str, data_path: str, out_dir: str) -> None:
    import jax
    import jax.numpy as jnp

    from neurotrain.systems.cpc_snn.network import readable, save_detector
    from neurotrain.systems.cpc_snn.train import load_params
    from neurotrain.training.jax_loop import flatten

    data = gw.load_processed(data_path)
    det, params, _ = load_params(Path(model_dir) / "model_best.npz", cfg)
    if data["strain"].shape[1] < gw.min_segment_samples(cfg):  # another dataset than the model's
        raise NeurotrainError(data_path, f"segments of {data['strain'].shape[1]} samples are shorter than the "
                                         f"model's receptive field plus its prediction horizon "
                                         f"({gw.min_segment_samples(cfg)} samples); extract with the dataset the "
                                         "model was trained on")
    test = np.flatnonzero(data["split"] == 2)
    x = data["strain"][test]
    forward = jax.jit(det.forward)
    scores, counts = [], None
    latents = []
    for i in range(0, len(x), 256):
        logits, z, trains = forward(params, jnp.asarray(x[i:i + 256]))
        scores.append(np.asarray(logits[:, 1] - logits[:, 0]))
        c = [np.asarray(t.sum(1)).astype(np.int16) for t in trains]
        counts = c if counts is None else [np.concatenate([a, b]) for a, b in zip(counts, c)]
        if i < 512:
            latents.append(np.asarray(z)[:max(0, 512 - i)])
    val_noise = np.flatnonzero((data["split"] == 1) & (data["label"] == 0))
    val_scores = det.scores(params, data["strain"][val_noise])
    labels = data["label"][test]
    k = cfg["analysis"]["spike_examples"]
    chirps, noise = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    # the loudest chirps and the first noise segments, half each
    pick = np.concatenate([chirps[np.argsort(-data["snr"][test][chirps])][: (k + 1) // 2], noise[: k // 2]])
    _, _, rasters = forward(params, jnp.asarray(x[pick]))
    fs = data["attrs"]["sample_rate"]
    stride = int(np.prod(cfg["model"]["encoder"]["strides"]))
    out = Path(out_dir)
    with atomic_dir(out / "weights") as w:
        for name, arr in flatten(params).items():
            save_npy(w / (readable(name).replace("/", ".") + ".npy"), arr)
    save_detector(out / "export", cfg["model"], params,
                  {"sample_rate": float(fs), "segment_samples": int(data["strain"].shape[1]),
                   "f_low": float(data["attrs"]["f_low"]), "f_high": float(data["attrs"]["f_high"])})
    with atomic_dir(out / "outputs") as o:
        save_npy(o / "test_index.npy", test.astype(np.int64))
        save_npy(o / "scores.npy", np.concatenate(scores).astype(np.float32))
        save_npy(o / "labels.npy", labels.astype(np.int8))
        save_npy(o / "snr.npy", data["snr"][test].astype(np.float32))
        save_npy(o / "chirp_mass.npy", data["chirp_mass"][test].astype(np.float32))
        for layer, c in enumerate(counts):
            save_npy(o / f"spike_counts_layer{layer}.npy", c)
        for layer, r in enumerate(rasters):
            save_npy(o / f"raster_layer{layer}.npy", np.asarray(r).astype(np.uint8))
        save_npy(o / "raster_index.npy", pick.astype(np.int64))
        save_npy(o / "latents.npy", np.concatenate(latents).astype(np.float32))
        save_npy(o / "frame_rate.npy", np.float64(fs / stride))
        save_npy(o / "val_noise_index.npy", val_noise.astype(np.int64))
        save_npy(o / "val_noise_scores.npy", val_scores)
