"""The cpc_snn system: injected SNRs, whitening, the matched filter, the spiking model's
gradients, the three phases (frozen encoder, accumulation, resume), GWOSC strain through a
loopback download, the seed's API, bad input."""

import copy
import hashlib
import io
import json
import os
import signal
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurotrain.systems.cpc_snn.analyze import MatchedFilter
from neurotrain import stats
from neurotrain.config import validate_system
from neurotrain.systems.cpc_snn import data as gw
from neurotrain.systems.cpc_snn import waveforms as wf
from neurotrain.errors import Interrupted, NeurotrainError
from neurotrain.systems.cpc_snn.network import CPCEncoder, Detector, SNNClassifier, SpikeBridge, lif_step, spike
from neurotrain.systems.cpc_snn import train as sc
from neurotrain.training.jax_loop import load_npz

from _http import LoopbackServer  # noqa: I001 - tests/ helper

SMALL = {"data": {"embedded": {"n_segments": 240, "segments_per_stream": 16}},
         "model": {"encoder": {"latent_dim": 16, "channels": [8, 8, 8]}, "cpc": {"context_dim": 16, "prediction_steps": 2},
                   "snn": {"hidden_sizes": [32, 16, 8]}},
         "training": {"micro_batch": 8, "accumulate": 2, "injection_masses": 16, "curriculum": {"steps": 4},
                      "phase1": {"epochs": 1, "warmup_steps": 2},
                      "phase2": {"epochs": 1, "steps_per_epoch": 3, "warmup_steps": 1},
                      "phase3": {"epochs": 2, "steps_per_epoch": 3, "warmup_steps": 1}},
         "analysis": {"n_templates": 8, "faps": [0.05], "bar_fap": 0.05, "spike_examples": 2}}


@pytest.fixture()
def gcfg():
    return validate_system("cpc_snn", copy.deepcopy(SMALL))


@pytest.fixture()
def processed(gcfg, tmp_path):
    gw.generate_embedded(gcfg, tmp_path / "raw")
    gw.preprocess_raw(gcfg, str(tmp_path / "raw"), tmp_path / "p.h5")
    return tmp_path / "p.h5"


# ----------------------------------------------------------------------------- data
def test_whitened_noise_is_white_with_unit_variance(gcfg):
    fs, n = 2048.0, 8192
    asd = np.sqrt(gw.aligo_psd(np.fft.rfftfreq(n, 1 / fs)))
    x = gw.colored_noise(asd, n, fs, np.random.default_rng(0), 16)
    w = gw.Whitener(asd, n, fs, 30.0, 500.0)
    y = w(x)
    assert abs(y.var() - 1) < 0.03
    p = np.abs(np.fft.rfft(y, axis=-1)) ** 2
    f = np.fft.rfftfreq(n, 1 / fs)
    low, high = p[:, (f > 60) & (f < 120)].mean(), p[:, (f > 300) & (f < 450)].mean()
    assert 0.9 < low / high < 1.1  # flat in band
    assert p[:, f > 520].mean() < 1e-3 * high


def test_whitening_stacked_streams_row_by_row_is_the_batched_formula():
    """Whitener whitens stacked streams one row at a time (memory: one spectrum alive); the
    numbers are those of the whole-array formula, bit for bit, and colored_noise's in-place
    product is its out-of-place one."""
    fs, n = 2048.0, 4096
    asd = np.sqrt(gw.aligo_psd(np.fft.rfftfreq(n, 1 / fs)))
    x = gw.colored_noise(asd, n, fs, np.random.default_rng(1), 6).reshape(2, 3, n)
    amp = np.where(np.isfinite(asd), asd, 0.0) * np.sqrt(fs / 2.0)
    ref = np.fft.irfft(np.fft.rfft(np.random.default_rng(1).standard_normal((6, n)), axis=-1) * amp, n=n, axis=-1)
    assert np.array_equal(x.reshape(6, n), ref)
    w = gw.Whitener(asd, n, fs, 30.0, 500.0)
    batched = np.fft.irfft(np.fft.rfft(x, axis=-1) * w.filter, n=n, axis=-1)
    assert np.array_equal(w(x), batched) and np.array_equal(w(x[1, 2]), batched[1, 2])


def test_injections_have_the_requested_optimal_snr(gcfg, processed, tmp_path):
    d = gw.load_processed(processed)
    with np.load(tmp_path / "raw" / "truth.npz") as z:
        truth = {k: z[k] for k in z.files}
    fs, N = d["attrs"]["sample_rate"], d["strain"].shape[1]
    w = gw.Whitener(d["asd_whiten"], N, fs, d["attrs"]["f_low"], d["attrs"]["f_high"])
    est, want = [], []
    for i in np.flatnonzero(d["label"] == 1)[:60]:
        h = gw.place_chirp(truth["chirp_mass"][i], truth["tc"][i], truth["phase"][i], fs, d["attrs"]["f_start"], N)
        t = w(h)
        est.append(d["strain"][i] @ t / np.linalg.norm(t) / w.scale)  # SNR + N(0, 1) noise
        want.append(truth["snr"][i])
    err = np.asarray(est) - np.asarray(want)
    assert abs(err.mean()) < 0.4 and 0.6 < err.std() < 1.4
    assert abs(d["strain"][d["label"] == 0].std() - 1) < 0.02
    assert set(np.unique(d["split"])) == {0, 1, 2}
    assert np.isnan(d["tc"][d["label"] == 0]).all() and (d["snr"][d["label"] == 0] == 0).all()


def test_matched_filter_recovers_the_snr_and_sets_a_sane_threshold(gcfg, processed):
    d = gw.load_processed(processed)
    inj = gcfg["data"]["injection"]
    mf = MatchedFilter(d["asd_whiten"], d["attrs"], inj, 32)
    ff = mf.fitting_factor(d["asd_whiten"], d["attrs"], inj, n=24)
    assert ff.min() > 0.97 and ff.max() <= 1.0 + 1e-6
    noise = mf(d["strain"][d["label"] == 0])
    assert 2.5 < np.median(noise) < 5.0  # max of |complex SNR| over templates and times
    s = mf(d["strain"])
    assert stats.roc_auc(s, d["label"]) > 0.8


def test_detection_statistics():
    labels = np.array([0] * 100 + [1] * 10)
    scores = np.concatenate([np.arange(100.0), np.full(10, 95.5)])
    assert stats.detection_threshold(scores[:100], 0.01) == 98.0
    assert stats.tpr_at_fap(scores, labels, 0.01) == 0.0
    assert stats.tpr_at_fap(scores, labels, 0.05) == 1.0
    assert np.isnan(stats.detection_threshold(scores[:50], 0.01))
    assert stats.roc_auc(scores, labels) == pytest.approx((96 * 10) / 1000)


def test_bootstrap_interval_of_the_tpr_ratio():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], [2000, 2000])
    ref = np.where(labels == 1, rng.normal(3.0, 1.0, 4000), rng.normal(0.0, 1.0, 4000))
    # the same detector: every paired resample gives ratio 1
    assert stats.bootstrap_tpr_ratio(ref, ref, labels, 0.01, n=50) == [1.0, 1.0]
    # a weaker detector (signal shifted by 2.5 instead of 3): its interval holds the ratio of the
    # true rates, P(N(2.5,1) > z) / P(N(3,1) > z) at the 1% threshold z = 2.326 (0.57 / 0.75)
    weak = np.where(labels == 1, ref - 0.5, ref)
    lo, hi = stats.bootstrap_tpr_ratio(weak, ref, labels, 0.01, n=300, quantiles=(0.025, 0.975))
    from scipy.stats import norm
    truth = norm.sf(2.326 - 2.5) / norm.sf(2.326 - 3.0)
    assert lo < truth < hi and 0.02 < hi - lo < 0.2
    # fewer noise segments than 1/fap: no threshold, no interval
    few = np.r_[0:50, 2000:2100]
    assert np.isnan(stats.bootstrap_tpr_ratio(ref[few], ref[few], labels[few], 0.01, n=10)).all()


# ----------------------------------------------------------------------------- model
def test_spike_is_heaviside_with_a_surrogate_gradient():
    v = jnp.array([-1.0, -0.1, 0.0, 0.2, 2.0])
    assert np.array_equal(np.asarray(spike(v, 2.0)), [0, 0, 0, 1, 1])
    g = jax.grad(lambda v: spike(v, 2.0).sum())(v)
    assert np.allclose(np.asarray(g), 1 / (1 + 2 * np.abs(np.asarray(v))) ** 2)


def test_reset_is_not_differentiated():
    # a spiking step: d v_new / d v_old is beta alone (no surrogate term from the reset)
    dv = jax.grad(lambda v: lif_step(v, 0.5, 0.9, 2.0)[0])(jnp.array(1.0))
    assert float(lif_step(jnp.array(1.0), 0.5, 0.9, 2.0)[1]) == 1.0
    assert float(dv) == pytest.approx(0.9)
    # the spike output itself carries the surrogate gradient
    ds = jax.grad(lambda v: lif_step(v, 0.5, 0.9, 2.0)[1])(jnp.array(1.0))
    assert float(ds) == pytest.approx(0.9 / (1 + 2 * 0.4) ** 2)
    snn = SNNClassifier(hidden_sizes=(3,), input_dim=2, current_norm=False)
    p = snn.init(jax.random.PRNGKey(0))
    s = (jax.random.uniform(jax.random.PRNGKey(1), (1, 6, 2)) > 0.3).astype(jnp.float32)
    grads = jax.grad(lambda p: snn.apply(p, s).sum())(p)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(grads))


def test_delayed_synapses_are_a_causal_dilated_convolution():
    """A single input spike at frame t0 reaches the first layer's membrane at t0 + j d through
    W_j only (taps j < 3, dilation 2), and never before t0."""
    snn = SNNClassifier(hidden_sizes=(4,), input_dim=3, current_norm=False, beta=0.0, delay_taps=3,
                        delay_dilations=(2,))
    p = snn.init(jax.random.PRNGKey(0))
    assert p["layers"][0]["w"].shape == (3, 3, 4) and snn.delay_span == 5
    t0, T = 3, 10
    s = jnp.zeros((1, T, 3)).at[0, t0, 1].set(1.0)
    # with beta 0 a unit fires exactly in the frames where its current exceeds the threshold 1
    w = np.zeros((3, 3, 4), np.float32)
    w[0, 1, 0], w[1, 1, 1], w[2, 1, 2] = 2.0, 2.0, 2.0  # tap j drives unit j above threshold 1
    p["layers"][0]["w"] = jnp.asarray(w)
    _, trains = snn.run(p, s)
    fired = {(int(t), int(u)) for t, u in zip(*np.nonzero(np.asarray(trains[0][0])))}
    assert fired == {(t0, 0), (t0 + 2, 1), (t0 + 4, 2)}
    # one tap is the plain per-frame synapse
    assert SNNClassifier(hidden_sizes=(4,), input_dim=3).delay_span == 1
    with pytest.raises(ValueError):
        SNNClassifier(hidden_sizes=(4, 2), delay_dilations=(1,))


def test_cpc_loss_is_chance_level_at_init_and_encoder_is_causal():
    # layer norm keeps the initial latents at unit scale, so the InfoNCE logits start near 0
    enc = CPCEncoder(latent_dim=16, channels=(8, 8, 8), context_dim=16, prediction_steps=2, norm="layer")
    p = enc.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 2048))
    z = enc.apply(p, x)
    assert z.shape == (8, gw.n_frames(2048, enc.kernels, enc.strides), 16)
    loss, acc = enc.cpc_loss(p, z)
    T = z.shape[1]
    assert abs(float(loss) - np.log(8 + T - 1)) < 1.0
    # the context at t does not see frames after t
    c1 = enc.context(p, z)
    c2 = enc.context(p, z.at[:, 10:].set(0.0))
    assert np.allclose(np.asarray(c1[:, :10]), np.asarray(c2[:, :10]))
    assert enc.first_prediction * 32 >= gw.receptive_field(enc.kernels, enc.strides)[0]


def test_encoder_latents_keep_the_signal_amplitude_unless_layer_normalised():
    """A chirp shows as extra power in whitened strain. Without normalisation the latents of 3x
    the input differ from those of x; layer norm over each frame's channels divides the factor
    out (biases are 0 at init), so the latents of x and 3x are the same."""
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 2048))
    for norm, same in (("none", False), ("layer", True)):
        enc = CPCEncoder(latent_dim=16, channels=(8, 8, 8), context_dim=16, prediction_steps=2, norm=norm)
        p = enc.init(jax.random.PRNGKey(0))
        z1, z3 = np.asarray(enc.apply(p, x)), np.asarray(enc.apply(p, 3 * x))
        assert np.allclose(z1, z3, rtol=1e-3, atol=1e-3) == same, norm


# ----------------------------------------------------------------------------- training
def test_a_phase_of_zero_epochs_is_skipped(gcfg, processed, tmp_path):
    """``phase1.epochs: 0`` (the schema's minimum: no CPC pre-training) trains the later phases
    from the initial encoder and finishes (it used to loop for ever on the empty phase)."""
    gcfg["training"]["phase1"]["epochs"] = 0
    out = tmp_path / "model"
    summary = sc.run_training(gcfg, str(processed), str(out))
    log = json.loads((out / "training_log.json").read_text())
    assert [r["phase"] for r in log["history"]] == [2, 3, 3]  # no row of phase 1
    assert summary["best_epoch"]["phase"] in (2, 3) and (out / "model_best.npz").is_file()


def test_phases_freeze_the_encoder_then_fine_tune_and_resume_exactly(gcfg, processed, tmp_path):
    full = tmp_path / "full"
    sc.run_training(gcfg, str(processed), str(full))
    p1, _ = load_npz(full / "checkpoints" / "phase1.npz")
    p2, _ = load_npz(full / "checkpoints" / "phase2.npz")
    p3, _ = load_npz(full / "checkpoints" / "phase3.npz")
    enc = [k for k in p1 if k.startswith("['encoder']")]
    assert enc and all(np.array_equal(p1[k], p2[k]) for k in enc)  # phase 2: encoder frozen
    assert any(not np.array_equal(p1[k], p2[k]) for k in p1 if k.startswith("['snn']"))
    assert any(not np.array_equal(p2[k], p3[k]) for k in enc)  # phase 3: encoder trains
    assert all(not k.startswith("['encoder']") or np.array_equal(p1[k], p2[k]) for k in p1)
    log = json.loads((full / "training_log.json").read_text())
    assert [r["phase"] for r in log["history"]] == [1, 2, 3, 3]
    assert not (full / "checkpoints" / "last.npz").exists()

    # interrupt after phase 2's epoch (SIGTERM mid-run), rerun, compare with the full run
    cut = tmp_path / "cut"
    orig = sc.CpcSnnTask.evaluate
    calls = {"n": 0}

    def evaluate(self, params, phase):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(self, params, phase)

    sc.CpcSnnTask.evaluate = evaluate
    try:
        with pytest.raises(Interrupted):
            sc.run_training(gcfg, str(processed), str(cut))
    finally:
        sc.CpcSnnTask.evaluate = orig
    assert (cut / "checkpoints" / "last.npz").is_file() and not (cut / "model_final.npz").exists()
    summary = sc.run_training(gcfg, str(processed), str(cut))
    assert summary["resumed_from"] == {"phase": 2, "epoch": 0}
    a, _ = load_npz(full / "model_final.npz")
    b, _ = load_npz(cut / "model_final.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_validation_smaller_than_a_micro_batch_is_refused(gcfg, processed):
    data = gw.load_processed(processed)
    val = np.flatnonzero(data["split"] == 1)
    keep = np.r_[val[data["label"][val] == 0][:3], val[data["label"][val] == 1][:3]]  # 6 < micro-batch 8
    data["split"] = np.where((data["split"] == 1) & ~np.isin(np.arange(len(data["split"])), keep), 2, data["split"])
    det = Detector.from_config(gcfg["model"])
    with pytest.raises(ValueError, match="6 validation segments are fewer than one micro-batch"):
        sc.CpcSnnTask(data, gcfg, det)
    data["split"][val[~np.isin(val, keep)][:2]] = 1  # 8: one micro-batch
    sc.CpcSnnTask(data, gcfg, det)


def test_a_silent_snn_is_reported_at_validation(gcfg, processed, caplog):
    det = Detector.from_config(gcfg["model"])
    task = sc.CpcSnnTask(gw.load_processed(processed), gcfg, det)
    phase = sc.phases_from_config(gcfg)[1]
    params = det.init(jax.random.PRNGKey(0))
    with caplog.at_level("WARNING", logger="neurotrain.train"):
        task.evaluate(params, phase)
    assert "same score" not in caplog.text
    # the last LIF layer pushed far below threshold: no spikes reach the readout
    params["snn"]["layers"][-1]["b"] = params["snn"]["layers"][-1]["b"] - 100.0
    with caplog.at_level("WARNING", logger="neurotrain.train"):
        out = task.evaluate(params, phase)
    assert out["auc"] == 0.5 and "gives every validation segment the same score" in caplog.text


def test_gradient_accumulation_averages_micro_batches(gcfg):
    from neurotrain.training.jax_loop import Phase, make_optimizer, make_step

    det = Detector.from_config(gcfg["model"])
    params = det.init(jax.random.PRNGKey(0))

    class T:
        def loss(self, p, x, y, w):
            return det.losses(p, x, y, w["cpc"], w["classification"])

    phase = Phase("phase3", "joint", ("encoder", "bridge", "snn"), {"cpc": 1.0, "classification": 1.0}, 1, 1e-3,
                  "constant", 0, None)
    opt = __import__("optax").sgd(1.0)  # update = -gradient
    step = make_step(T(), phase, opt)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 2048))
    y = jnp.array([[0, 1, 0, 1], [1, 1, 0, 0]])
    new, _, aux, _ = step(params, {}, opt.init(params), x, y, None)
    g = jax.grad(lambda p: (det.losses(p, x[0], y[0], 1.0, 1.0)[0] + det.losses(p, x[1], y[1], 1.0, 1.0)[0]) / 2)(params)
    for a, b, c in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(g)):
        np.testing.assert_allclose(np.asarray(b - a), np.asarray(c), rtol=2e-3, atol=1e-5)
    assert make_optimizer(phase, 10, 1.0)[1](0) == pytest.approx(1e-3)


def test_chirp_posterior_is_calibrated_on_the_injectors_own_examples(gcfg, processed):
    """The soft labels are the Bayes posterior of the injector's own model: among the training
    examples it gives probability q, a fraction q holds a chirp (at the curriculum's doubled SNRs
    too), it ranks them at least as well as the matched filter, its SNR series peaks where the
    matched filter's statistic does (the band's own sample rate loses nothing), and a segment's
    value does not depend on the segments batched with it."""
    d = gw.load_processed(processed)
    inj = gcfg["data"]["injection"]
    noise = d["strain"][(d["split"] == 0) & (d["label"] == 0)]
    injector = sc.Injector(d["asd_whiten"], d["attrs"], inj, 16)
    post = wf.ChirpPosterior(d["asd_whiten"], d["attrs"], inj, 16)
    mf = MatchedFilter(d["asd_whiten"], d["attrs"], inj, 16)
    assert post.M == 512 and d["strain"].shape[1] == 2048  # 30-504 Hz fits 512 complex samples per second
    rng = np.random.default_rng(5)
    for scale in (1.0, 2.0):
        x, y = injector.batch(noise, 3000, rng, scale)
        q = post(x, scale).astype(np.float64)
        assert q.dtype == np.float64 and ((q >= 0) & (q <= 1)).all()
        assert abs(q.mean() - y.mean()) < 0.03
        edges = np.quantile(q, np.linspace(0, 1, 6))
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = (q >= lo) & (q <= hi)
            assert abs(y[inside].mean() - q[inside].mean()) < 0.07, (scale, lo, hi)
        ce = -np.mean(y * np.log(np.clip(q, 1e-12, 1)) + (1 - y) * np.log(np.clip(1 - q, 1e-12, 1)))
        assert ce < {1.0: 0.35, 2.0: 0.1}[scale]
        assert stats.roc_auc(q, y) >= stats.roc_auc(mf(x), y) - 0.005
    # a segment's posterior does not depend on the segments batched with it
    whole = post.log_bayes_factor(x[:40], 2.0)
    assert np.array_equal(whole, np.concatenate([post.log_bayes_factor(x[:13], 2.0), post.log_bayes_factor(x[13:40], 2.0)]))
    assert np.array_equal(whole, post.log_bayes_factor(x[:40], 2.0, chunk=16))
    peak = post.snr_series(x[:200]).reshape(200, -1).max(1)
    ratio = peak / mf(x[:200])
    assert np.median(ratio) > 0.99 and ratio.min() > 0.9 and ratio.max() < 1.01  # float32, the analytic pair


def test_soft_labels_are_the_detection_target(gcfg, processed, caplog):
    """0/1 floats give the integer labels' loss; with training.soft_labels the detection
    batches carry P(chirp) as float32 (higher on chirps), without them the injector's labels;
    on real strain the Gaussian posterior's blind spot (glitches) is said."""
    det = Detector.from_config(gcfg["model"])
    params = det.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 2048))
    y = jnp.array([0, 1, 1, 0, 1, 0])
    hard, soft = det.losses(params, x, y, 0.0, 1.0)[1], det.losses(params, x, y.astype(jnp.float32), 0.0, 1.0)[1]
    assert float(hard["classification_loss"]) == pytest.approx(float(soft["classification_loss"]), rel=1e-6)
    assert float(hard["accuracy"]) == float(soft["accuracy"])
    data = gw.load_processed(processed)
    phase = sc.phases_from_config(gcfg)[1]
    plain = next(sc.CpcSnnTask(data, gcfg, det).batches(phase, np.random.default_rng(0), 0))[1]
    assert plain.dtype == np.int32
    cfg = copy.deepcopy(gcfg)
    cfg["training"]["soft_labels"]["weight"] = 1.0
    task = sc.CpcSnnTask(data, cfg, det)
    _, q = next(task.batches(phase, np.random.default_rng(0), 0))
    _, labels = task.injector.batch(task.noise, q.size, np.random.default_rng(0), task.snr_scale(-task.cpc_steps))
    assert q.dtype == np.float32 and q.shape == plain.shape and ((q >= 0) & (q <= 1)).all()
    assert q.ravel()[labels == 1].mean() > q.ravel()[labels == 0].mean() + 0.5
    assert 0 < task.posterior_floor() < np.log(2)
    assert "glitch" not in caplog.text
    data["attrs"]["source"] = "gwosc"
    with caplog.at_level("WARNING", logger="neurotrain.train"):
        sc.CpcSnnTask(data, cfg, det)
    assert "assumes Gaussian noise; in gwosc strain a glitch" in caplog.text


def test_seed_unified_trainer_api(capsys):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 2048)).astype(np.float32), np.array([0, 1] * 4)
    trainer = sc.UnifiedTrainer(cpc_encoder=CPCEncoder(latent_dim=16, channels=(8, 8, 8), context_dim=16,
                                                       prediction_steps=2),
                                spike_bridge=SpikeBridge(threshold=0.1),
                                snn_classifier=SNNClassifier(num_classes=2, hidden_sizes=[32, 16, 8]),
                                learning_rate=1e-4, cpc_weight=1.0, classification_weight=1.0, batch_size=4)
    state, metrics = trainer.train(train_signals=x, train_labels=y, num_epochs=2)
    cpc_params, classifier_params, spike_bridge_params = state
    assert "conv" in cpc_params and "layers" in classifier_params and "gain" in spike_bridge_params
    assert np.isfinite(metrics["final_loss"])
    assert "Epoch 2/2 | Loss: " in capsys.readouterr().out


# ----------------------------------------------------------------------------- GWOSC + bad input
from _gwosc import DQ_NAMES, GPS0, gwosc_file as _gwosc_file  # noqa: E402,F401 - tests/ helper


def _gwosc_cfg(gcfg, files):
    c = copy.deepcopy(gcfg)
    c["data"]["source"] = "gwosc"
    c["data"]["gwosc"]["files"] = files
    c["data"]["gwosc"]["stride"] = 0.25
    c["analysis"]["bar_fap"] = 0.1
    return c


def _cli(cwd, *args):
    import subprocess

    from conftest import NEUROTRAIN, snakemake_env

    return subprocess.run([NEUROTRAIN, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=snakemake_env(), timeout=300)


def _write_cfg(cwd, c) -> str:
    import yaml

    (cwd / "c.yaml").write_text(yaml.safe_dump({"systems": ["cpc_snn"], "cpc_snn": c}))
    return "c.yaml"


def _assert_blocks(d, seconds=1.0):
    """No sample in two splits, and a gap of at least one segment between splits."""
    spans = {k: d["gps_start"][d["split"] == k] for k in (0, 1, 2)}
    assert all(len(v) for v in spans.values())
    for a in range(3):
        for b in range(a + 1, 3):
            A, B = spans[a], spans[b]
            gap = np.min(np.abs(A[:, None] - B[None, :]))
            assert gap >= 2 * seconds - 1e-6, (a, b, gap)  # starts 2 s apart: 1 s segment + 1 s gap


def test_gwosc_download_and_preprocess_through_the_cli(gcfg, tmp_path):
    """A file in GWOSC's layout around GW150914, served on 127.0.0.1, fetched and preprocessed as
    the workflow runs them (relative paths): the event, the seconds failing CBC_CAT2 and a
    zero-filled and a NaN stretch are never inside a segment, the splits are time blocks."""
    _gwosc_file(tmp_path / "src.hdf5", seconds=80.0, dq_fail=(33,), zeros_at=int(6.0 * 4096), nan_at=int(27.5 * 4096),
                hw_injection=(60,))
    body = (tmp_path / "src.hdf5").read_bytes()
    md5 = hashlib.md5(body).hexdigest()
    name = "H-H1_GWOSC_4KHZ_R1-1126259447-32.hdf5"
    server = LoopbackServer({name: body}, fail_first=1)
    try:
        r = _cli(tmp_path, "fetch", "--url", f"{server.url}/{name}", "--md5", md5, "--out",
                 f"data/raw/cpc_snn/download/{name}")
        assert r.returncode == 0, r.stderr
    finally:
        server.close()
    cfg = _write_cfg(tmp_path, _gwosc_cfg(gcfg, {name: md5}))
    r = _cli(tmp_path, "preprocess", "--system", "cpc_snn", "--config", cfg, "--raw",
             f"data/raw/cpc_snn/download/{name}", "--out", "data/processed/cpc_snn.h5")
    assert r.returncode == 0, r.stderr
    assert "GW150914 (GPS 1126259462.4) in the file" in r.stderr and "fail the data-quality flags" in r.stderr
    assert "fail the hardware-injection flags" in r.stderr
    d = gw.load_processed(tmp_path / "data/processed/cpc_snn.h5")
    assert d["attrs"]["source"] == "gwosc" and d["strain"].shape[1] == 2048
    start, end = d["gps_start"], d["gps_start"] + 1.0
    for lo, hi in [(1126259462.4 - 4, 1126259462.4 + 2), (GPS0 + 33, GPS0 + 34), (GPS0 + 60, GPS0 + 61),
                   (GPS0 + 6, GPS0 + 6 + 1000 / 4096),
                   (GPS0 + 27.5, GPS0 + 27.5 + 100 / 4096)]:
        assert not ((start < hi) & (end > lo)).any(), (lo, hi)
    assert abs(d["strain"][d["label"] == 0].std() - 1) < 0.15
    assert (d["label"] == 1).any() and (d["snr"][d["label"] == 1] >= 3).all()
    _assert_blocks(d)


def _as_gwf(h5_path, gwf_path):
    """The same strain and masks as a GWOSC frame file: channels H1:GWOSC-4KHZ_R1_STRAIN and its
    1 Hz _DQMASK and _INJMASK beside it (integers only; GWOSC defines the bits), written by gwpy."""
    from gwpy.timeseries import TimeSeries, TimeSeriesDict

    with h5py.File(h5_path, "r") as fh:
        ds = fh["strain/Strain"]
        x, t0, dt = ds[()], ds.attrs["Xstart"], ds.attrs["Xspacing"]
        dq, inj = fh["quality/simple/DQmask"][()], fh["quality/injections/Injmask"][()]
    chans = TimeSeriesDict()
    for suffix, values, rate in (("STRAIN", x, 1 / dt), ("DQMASK", dq, 1.0), ("INJMASK", inj, 1.0)):
        name = f"H1:GWOSC-4KHZ_R1_{suffix}"
        chans[name] = TimeSeries(values, t0=t0, sample_rate=rate, name=name, channel=name)
    chans.write(str(gwf_path), format="gwf")


def test_gwf_frames_read_like_the_hdf5_file(gcfg, tmp_path):
    """GWOSC publishes each stretch as HDF5 and as GWF frames: the frame file, read with gwpy
    through lalframe, gives the same segments, splits and masks (data-quality and injection
    seconds, the event) as the HDF5 file of the same strain."""
    _gwosc_file(tmp_path / "H1.hdf5", seconds=48.0, dq_fail=(33,), hw_injection=(40,))
    gwf = "H-H1_GWOSC_4KHZ_R1-1126259447-48.gwf"
    _as_gwf(tmp_path / "H1.hdf5", tmp_path / gwf)
    out = {}
    for raw in ("H1.hdf5", gwf):
        c = _gwosc_cfg(gcfg, {})
        c["data"]["gwosc"]["paths"] = [raw]
        r = _cli(tmp_path, "preprocess", "--system", "cpc_snn", "--config", _write_cfg(tmp_path, c), "--raw", raw,
                 "--out", f"{raw}.h5")
        assert r.returncode == 0, r.stderr
        assert "fail the data-quality flags" in r.stderr and "fail the hardware-injection flags" in r.stderr
        out[raw] = gw.load_processed(tmp_path / f"{raw}.h5")
    a, b = out["H1.hdf5"], out[gwf]
    for key in ("gps_start", "split", "label", "strain"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = _gwosc_cfg(gcfg, {})
    c["data"]["gwosc"].update(paths=[gwf], gwf_channel="H1:MY-FILTERED")
    r = _cli(tmp_path, "preprocess", "--system", "cpc_snn", "--config", _write_cfg(tmp_path, c), "--raw", gwf,
             "--out", "x.h5")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: {gwf}: no channel 'H1:MY-FILTERED' in the frame file (it has H1:GWOSC-4KHZ_R1_DQMASK, "
        "H1:GWOSC-4KHZ_R1_INJMASK, H1:GWOSC-4KHZ_R1_STRAIN; config key cpc_snn.data.gwosc.gwf_channel)")


def test_gwosc_local_path_and_too_few_noise_segments_for_the_bar(gcfg, tmp_path):
    """A local file (gwosc.paths) works like a download; one 32 s file cannot resolve a
    false-alarm probability of 1e-2, which is refused at preprocessing, before any training."""
    _gwosc_file(tmp_path / "H1.hdf5", seconds=32.0)
    c = _gwosc_cfg(gcfg, {})
    c["data"]["gwosc"]["paths"] = ["H1.hdf5"]
    r = _cli(tmp_path, "preprocess", "--system", "cpc_snn", "--config", _write_cfg(tmp_path, c), "--raw", "H1.hdf5",
             "--out", "p.h5")
    assert r.returncode == 0, r.stderr
    c["analysis"]["bar_fap"] = 0.01
    r = _cli(tmp_path, "preprocess", "--system", "cpc_snn", "--config", _write_cfg(tmp_path, c), "--raw", "H1.hdf5",
             "--out", "q.h5")
    assert r.returncode == 2 and "H1.hdf5: the test split holds" in r.stderr and "needs at least 100" in r.stderr
    assert "cpc_snn.analysis.bar_fap" in r.stderr and not (tmp_path / "q.h5").exists()


def test_no_sample_in_two_splits_for_every_source(gcfg, processed, tmp_path):
    """Embedded segments are disjoint stretches of their streams; GWOSC segments overlap (stride
    below the segment length), so they are split in time blocks with a gap."""
    d = gw.load_processed(processed)
    assert set(np.unique(d["split"])) == {0, 1, 2} and np.isnan(d["gps_start"]).all()
    _gwosc_file(tmp_path / "H1.hdf5", seconds=60.0, gps=1126300000.0)
    gw.preprocess_raw(_gwosc_cfg(gcfg, {"H1.hdf5": "0" * 32}), [str(tmp_path / "H1.hdf5")], tmp_path / "g.h5")
    g = gw.load_processed(tmp_path / "g.h5")
    samples = {k: set() for k in (0, 1, 2)}
    for t, k in zip(g["gps_start"], g["split"]):
        first = int(round((t - 1126300000.0) * 2048))
        samples[int(k)].update(range(first, first + 2048))
    assert not (samples[0] & samples[1]) and not (samples[0] & samples[2]) and not (samples[1] & samples[2])
    _assert_blocks(g)


@pytest.mark.parametrize("kind, needle", [
    ("all_nan", "no usable strain"),
    ("rate", "sample rate 2048 Hz"),
    ("nodataset", "not a GWOSC HDF5 strain file"),
    ("short", "no usable stretch of strain is long enough"),
    ("dq_flag", "data-quality flag(s) NO_SUCH_FLAG not in the file"),
    ("no_quality", "no readable data-quality mask"),
    ("gwf", "frame"),
])
def test_gwosc_bad_input_is_named_and_leaves_nothing(gcfg, tmp_path, kind, needle):
    p = tmp_path / ("H-H1_GWOSC_4KHZ_R1-1126259447-32.gwf" if kind == "gwf" else "bad.hdf5")
    c = _gwosc_cfg(gcfg, {p.name: "0" * 32})
    if kind == "all_nan":
        _gwosc_file(p, all_nan=True)
    elif kind == "rate":
        _gwosc_file(p, rate=2048.0)
    elif kind == "nodataset":
        _gwosc_file(p, dataset=False)
    elif kind == "short":
        _gwosc_file(p, seconds=3.0, gps=1126300000.0)
    elif kind == "dq_flag":
        _gwosc_file(p)
        c["data"]["gwosc"]["dq_flags"] = ["DATA", "NO_SUCH_FLAG"]
    elif kind == "no_quality":
        _gwosc_file(p, quality=False)
    else:
        p.write_bytes(b"IGWD\x00 a frame file")
    out = tmp_path / "out.h5"
    with pytest.raises(NeurotrainError) as e:
        gw.preprocess_raw(c, [str(p)], out)
    assert needle in str(e.value) and str(p) in str(e.value)
    assert not out.exists() and not list(tmp_path.glob(".out.h5*"))


def test_segments_shorter_than_the_receptive_field_are_refused(gcfg, tmp_path):
    c = copy.deepcopy(gcfg)
    c["data"]["segment_duration"] = 0.1
    c["data"]["injection"].update(tc_min=0.5, tc_max=0.9, chirp_mass_min=10.0, chirp_mass_max=12.0, f_start=150.0)
    gw.generate_embedded(c, tmp_path / "raw")
    with pytest.raises(NeurotrainError, match="receptive field"):
        gw.preprocess_raw(c, str(tmp_path / "raw"), tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()


def test_injection_config_is_checked(gcfg, tmp_path):
    c = copy.deepcopy(gcfg)
    c["data"]["injection"]["chirp_mass_min"] = 3.0  # its chirp lasts longer than tc_min allows
    with pytest.raises(NeurotrainError, match="longest chirp"):
        gw.generate_embedded(c, tmp_path / "raw")
    c = copy.deepcopy(gcfg)
    c["data"]["f_high"] = 1500.0
    with pytest.raises(NeurotrainError, match="Nyquist"):
        gw.generate_embedded(c, tmp_path / "raw")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_corrupt_checkpoint_is_named(tmp_path):
    p = tmp_path / "model_best.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(NeurotrainError, match="corrupt or unreadable"):
        load_npz(p)
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros(2))
    p.write_bytes(buf.getvalue())
    with pytest.raises(NeurotrainError):
        load_npz(p)  # no __meta__


def test_every_model_key_reaches_the_model(gcfg):
    m = copy.deepcopy(gcfg["model"])
    m["snn"].update(readout="mean", current_norm=False, beta=0.8, readout_beta=0.7, surrogate_slope=3.0, weight_scale=2.0)
    m["spike_bridge"].update(threshold=0.3, features="context")
    m["encoder"]["latent_dim"], m["cpc"]["context_dim"], m["encoder"]["norm"] = 16, 12, "layer"
    m["snn"].update(delay_taps=3, delay_dilations=[1, 2, 4])
    det = Detector.from_config(m)
    assert (det.snn.delay_taps, det.snn.delay_dilations, det.snn.delay_span) == (3, (1, 2, 4), 15)
    assert (det.snn.readout, det.snn.current_norm, det.snn.beta, det.snn.readout_beta, det.snn.surrogate_slope,
            det.snn.weight_scale, det.snn.hidden_sizes) == ("mean", False, 0.8, 0.7, 3.0, 2.0, (32, 16, 8))
    assert (det.bridge.threshold, det.bridge.surrogate_slope, det.bridge.features) == (0.3, 3.0, "context")
    assert (det.encoder.latent_dim, det.encoder.channels, det.encoder.context_dim, det.encoder.prediction_steps,
            det.encoder.norm) == (16, (8, 8, 8), 12, 2, "layer")
    p = det.init(jax.random.PRNGKey(0))
    assert "g" not in p["snn"]["layers"][0]
    # the bridge encodes the context: 12 features x ON/OFF feed the first LIF layer
    assert p["bridge"]["gain"].shape == (12,) and p["snn"]["layers"][0]["w"].shape == (3, 24, 32)
    logits, z, trains = det.forward(p, jnp.zeros((2, 2048)))
    assert z.shape[-1] == 16 and trains[0].shape[-1] == 24 and logits.shape == (2, 2)


def test_bridge_spikes_on_and_off_of_the_normalised_features():
    """ON spike of a feature when its layer-normalised value exceeds the threshold, OFF spike when
    it is below minus the threshold; scaling the features changes nothing (layer norm)."""
    b = SpikeBridge(threshold=0.5, latent_dim=4)
    u = np.array([1.0, 0.2, -0.2, -1.0])
    for scale in (1.0, 0.01, 30.0):
        s = np.asarray(b.apply(b.init(None), jnp.asarray(scale * u, jnp.float32)[None, None]))[0, 0]
        np.testing.assert_array_equal(s, [1, 0, 0, 0, 0, 0, 0, 1])


def test_bridge_without_norm_thresholds_the_features_as_they_are():
    """``norm="none"``: the features' own size decides (scaling them changes the spikes)."""
    b = SpikeBridge(threshold=0.5, latent_dim=4, norm="none")
    u = np.array([1.0, 0.2, -0.2, -1.0])
    spikes = [np.asarray(b.apply(b.init(None), jnp.asarray(scale * u, jnp.float32)[None, None]))[0, 0]
              for scale in (1.0, 0.1)]
    np.testing.assert_array_equal(spikes[0], [1, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(spikes[1], np.zeros(8))


def test_bridge_levels_count_the_thresholds_a_feature_crosses():
    """With ``levels`` thresholds per polarity (threshold + i * spacing), a feature's ON units
    spike for every threshold its normalised value exceeds (OFF units likewise below minus them):
    a thermometer code of its size, level by level (ON then OFF of every feature per level)."""
    b = SpikeBridge(threshold=0.1, latent_dim=4, levels=3, level_spacing=0.5)
    assert b.thresholds == pytest.approx((0.1, 0.6, 1.1)) and b.out_dim == 24
    u = np.array([1.5, 0.3, -0.8, -1.0])  # mean 0, SD 1: layer normalisation leaves it (to 1e-5)
    s = np.asarray(b.apply(b.init(None), jnp.asarray(u, jnp.float32)[None, None]))[0, 0].reshape(3, 2, 4)
    np.testing.assert_array_equal(s[:, 0].sum(0), [3, 1, 0, 0])  # ON: 1.5 crosses 0.1, 0.6 and 1.1; 0.3 only 0.1
    np.testing.assert_array_equal(s[0, 0], [1, 1, 0, 0])
    np.testing.assert_array_equal(s[:, 1].sum(0), [0, 0, 2, 2])  # OFF: -0.8 and -1.0 cross 0.1 and 0.6


def test_delay_dilations_must_match_the_hidden_layers(gcfg, tmp_path):
    gcfg["model"]["snn"].update(delay_taps=3, delay_dilations=[1, 2])
    with pytest.raises(NeurotrainError, match=r"config key cpc_snn\.model: snn\.delay_dilations has 2 entries for 3 hidden layers"):
        sc.run_training(gcfg, str(tmp_path / "missing.h5"), str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()


def test_extract_and_analyze_score_the_validation_noise(gcfg, processed, tmp_path, monkeypatch):
    """What `apply` sets its thresholds on: extract scores the validation split's noise segments
    with model_best, analyze runs the matched filter over the same segments (paths relative, as
    the rules pass them)."""
    from neurotrain.systems.cpc_snn.analyze import analyze
    from neurotrain.systems.cpc_snn.extract import extract

    monkeypatch.chdir(tmp_path)
    sc.run_training(gcfg, "p.h5", "run/model")
    extract(gcfg, "run/model", "p.h5", "run")
    analyze(gcfg, "run", "p.h5", None)
    proc = gw.load_processed("p.h5")
    val_noise = np.flatnonzero((proc["split"] == 1) & (proc["label"] == 0))
    assert np.array_equal(np.load("run/outputs/val_noise_index.npy"), val_noise) and len(val_noise) >= 10
    det, params, _ = sc.load_params("run/model/model_best.npz", gcfg)
    np.testing.assert_allclose(np.load("run/outputs/val_noise_scores.npy"),
                               np.asarray(det.score(params, jnp.asarray(proc["strain"][val_noise]))), rtol=1e-5, atol=1e-5)
    mf = MatchedFilter(proc["asd_whiten"], proc["attrs"], gcfg["data"]["injection"], gcfg["analysis"]["n_templates"])
    np.testing.assert_allclose(np.load("run/metrics/mf_val_noise_scores.npy"), mf(proc["strain"][val_noise]), rtol=1e-5)


def test_apply_thresholds_are_set_on_validation_noise_never_on_test(tmp_path, monkeypatch):
    """`apply`'s trigger thresholds are a choice made from data: the validation split's noise sets
    them (the (fap * n)-th highest score of n noise segments); the test split's scores do not
    move them and only measure their false-alarm fraction; too few validation noise segments for
    the FAP are refused, naming the key."""
    from neurotrain.systems.cpc_snn.apply import trigger_thresholds

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    n, fap = 40, 0.1
    files = {"outputs/val_noise_scores.npy": rng.normal(size=n), "metrics/mf_val_noise_scores.npy": rng.rayleigh(2, n),
             "outputs/labels.npy": np.r_[np.zeros(30), np.ones(20)].astype(np.int8),
             "outputs/scores.npy": rng.normal(size=50), "metrics/mf_scores.npy": rng.rayleigh(2, 50)}

    def write(**scale):
        for name, v in files.items():
            (Path("run") / name).parent.mkdir(parents=True, exist_ok=True)
            np.save(Path("run") / name, (v * scale.get(name, 1.0)).astype(np.float32))
        return trigger_thresholds(Path("run"), fap)

    got = write()
    k = int(np.floor(fap * n))
    assert got["thresholds"]["snn"] == pytest.approx(np.sort(files["outputs/val_noise_scores.npy"])[::-1][k], rel=1e-6)
    assert got["thresholds"]["matched_filter"] == pytest.approx(
        np.sort(files["metrics/mf_val_noise_scores.npy"])[::-1][k], rel=1e-6)
    assert got["thresholds_set_on"] == {"split": "validation", "noise_segments": n}
    test_noise = files["outputs/scores.npy"][:30].astype(np.float32)
    assert got["fap_on_test_noise"]["snn"] == pytest.approx(np.mean(test_noise > got["thresholds"]["snn"]))
    assert got["fap_on_test_noise"]["noise_segments"] == 30
    louder = write(**{"outputs/scores.npy": 3.0, "metrics/mf_scores.npy": 3.0})  # the test split: no effect
    assert louder["thresholds"] == got["thresholds"]
    tripled = write(**{"metrics/mf_val_noise_scores.npy": 3.0})  # the validation noise sets them
    assert tripled["thresholds"]["matched_filter"] == pytest.approx(3 * got["thresholds"]["matched_filter"], rel=1e-6)
    write()
    with pytest.raises(NeurotrainError, match=f"config key cpc_snn.apply.fap: {n} noise validation segments cannot"):
        trigger_thresholds(Path("run"), 0.5 / n)
