"""The E-I RNN: Dale's law after optimizer steps, spectral radius at init, shapes, losses."""

import numpy as np
import pytest
import torch

from neurotrain.systems.ei_rnn.train import EIRNN, EIRNNTask, build_model


def _model(**kw):
    torch.manual_seed(0)
    labels = np.r_[np.zeros(16, int), np.ones(4, int)][np.random.default_rng(0).permutation(20)]
    return EIRNN(3, 2, labels, **kw), labels


def test_spectral_radius_at_init():
    for rho in (0.9, 0.5):
        m, _ = _model(spectral_radius=rho)
        eig = torch.linalg.eigvals(m.w_rec.detach()).abs().max().item()
        assert eig == pytest.approx(rho, rel=1e-4)


def test_dale_law_holds_after_optimizer_steps():
    m, labels = _model()
    opt = torch.optim.Adam(m.parameters(), lr=0.5)  # large steps push weights across zero
    u = torch.randn(8, 10, 3)
    for _ in range(20):
        rates, out = m(u)
        loss = -(rates.mean() * torch.randn(())).abs() + (rates - torch.rand_like(rates)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = m.w_rec.detach().numpy()
    raw_sign = np.sign(m.w_rec_raw.detach().numpy())
    assert (raw_sign < 0).any(), "the optimizer should have pushed some raw weights negative"
    assert (w[:, labels == 0] >= 0).all() and (w[:, labels == 1] <= 0).all()
    assert np.all(np.diag(w) == 0)


def _recurrence_by_steps(c, x0, w, decay):
    """The recurrence as plain autograd operations, one step at a time (the oracle)."""
    x, out = x0, []
    r = torch.nn.functional.softplus(x)
    for c_t in c.unbind(1):
        x = torch.addmm(c_t + decay * x, r, w)
        r = torch.nn.functional.softplus(x)
        out.append(r)
    return torch.stack(out, 1)


def test_fused_recurrence_matches_autograd_through_time():
    from neurotrain.systems.ei_rnn.network import Recurrence

    g = torch.Generator().manual_seed(0)
    B, T, N = 6, 9, 5
    c = (3 * torch.randn(B, T, N, generator=g, dtype=torch.float64)).requires_grad_()  # some x above 20
    c.data[0, 2, 1] = 30.0  # softplus's linear branch
    h0 = torch.randn(N, generator=g, dtype=torch.float64, requires_grad=True)
    w = (0.4 * torch.randn(N, N, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, h, w: Recurrence.apply(c, h.expand(B, -1), w, 0.5), (c, h0, w))
    # float32 at a default-like size: the same rates, and the gradients of every input to rounding
    B, T, N = 64, 60, 50
    c = torch.randn(B, T, N, generator=g).requires_grad_()
    h0 = torch.randn(N, generator=g, requires_grad=True)
    w = (0.1 * torch.randn(N, N, generator=g)).requires_grad_()
    up = torch.randn(B, T, N, generator=g)
    ref = _recurrence_by_steps(c, h0.expand(B, -1), w, 0.5)
    fused = Recurrence.apply(c, h0.expand(B, -1), w, 0.5)
    assert torch.equal(ref, fused)
    for a, b in zip(torch.autograd.grad(ref, (c, h0, w), up), torch.autograd.grad(fused, (c, h0, w), up)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_shapes_and_h0():
    m, labels = _model(input_embed_dim=56, attention_heads=4, attention_dim=16)
    rates, out = m(torch.randn(5, 7, 3))
    assert rates.shape == (5, 7, 20) and out.shape == (5, 7, 2)
    assert (rates >= 0).all()
    assert torch.allclose(m.h0, torch.full((20,), 0.1)) and m.h0.requires_grad
    assert m.w_in.weight.shape == (20, 56)
    assert m.embed.out.weight.shape == (56, 3 * 4)
    assert m.w_out.weight.shape == (2, 16)
    assert m.alpha == pytest.approx(0.5)


def test_fixed_h0_and_linear_embedding():
    m, _ = _model(learnable_h0=False, input_embed_type="linear")
    assert not isinstance(m.h0, torch.nn.Parameter)
    rates, _ = m(torch.randn(2, 4, 3))
    assert rates.shape == (2, 4, 20)


def test_noise_is_seeded_and_switchable():
    m, _ = _model()
    u = torch.randn(2, 6, 3)
    a, _ = m(u, generator=torch.Generator().manual_seed(1))
    b, _ = m(u, generator=torch.Generator().manual_seed(1))
    c, _ = m(u, noise=False)
    d, _ = m(u, noise=False)
    assert torch.equal(a, b) and torch.equal(c, d) and not torch.equal(a, c)


def test_task_losses_and_grad_balancing(tiny_dataset, cfg):
    from neurotrain.systems.ei_rnn.data import load_processed

    torch.manual_seed(0)
    task = EIRNNTask(load_processed(tiny_dataset["h5"]), cfg, torch.device("cpu"))
    steps = []
    out = task.train_epoch(np.random.default_rng(0), lambda: steps.append(1))
    assert steps == [1]  # full batch: one optimizer step per epoch
    for k in ("train_loss", "L_neuron", "L_trial", "L_reg", "L_output", "trial_weight"):
        assert np.isfinite(out[k]), k
    assert out["trial_weight"] != cfg["loss"]["ltrial_scale"]  # balanced by gradient norms
    rebuilt = build_model(task.model_config)
    assert rebuilt.w_rec.shape == task.model.w_rec.shape


def _plain_trial_loss(rates, spikes, conditions, n_conditions):
    """L_trial as first written: boolean masks, the data's sorted means recomputed per call."""
    T = rates.shape[1]
    s_m = rates.mean(1)
    s_m = s_m + torch.sqrt(s_m.detach().clamp_min(1e-6) / T) * torch.randn_like(s_m)
    s_d = spikes.mean(1)
    losses = []
    for c in range(n_conditions):
        sel = conditions == c
        if int(sel.sum()) < 2:
            continue
        m, d = torch.sort(s_m[sel], 0).values, torch.sort(s_d[sel], 0).values
        losses.append((((m - d) ** 2).mean(0) / d.var(0).clamp_min(1e-4)).mean())
    return torch.stack(losses).mean()


def _plain_losses(task, idx):
    """The four loss terms as first written (the oracle): advanced indexing, the PSTH as a plain
    [C, B] x [B, T N] product differentiated by autograd, L_trial's data side recomputed."""
    from neurotrain.systems.ei_rnn.network import Recurrence, condition_matrix, neuron_loss, output_loss, reg_loss

    m, i = task.model, torch.as_tensor(idx)
    table = m.input_drive(task.input_table)
    drive = table.index_select(0, task.input_index[i].reshape(-1)).reshape(len(idx), -1, table.shape[-1])
    B, T, N = drive.shape
    c = m.alpha * (drive + m.bias) + (2 * m.alpha) ** 0.5 * m.noise_scale * torch.randn((B, T, N))
    rates = Recurrence.apply(c, m.h0.expand(B, -1), m.alpha * m.w_rec.t(), 1.0 - m.alpha)
    outputs = m.w_out(rates[..., m.exc_index])
    spikes, cond = task.spikes[i], task.conditions[i]
    M = condition_matrix(cond, task.n_conditions)
    pm = (M @ rates.reshape(B, -1)).reshape(-1, T, N)
    pd = (M @ spikes.reshape(B, -1)).reshape(-1, T, N)
    lc = task.loss_cfg
    return {"L_neuron": neuron_loss(pm, pd), "L_trial": _plain_trial_loss(rates, spikes, cond, task.n_conditions),
            "L_reg": reg_loss(m, pm, pd, lc["lambda_reg"], lc["lambda_scale"], lc["lambda_var"]),
            "L_output": output_loss(outputs, task.outputs[i])}


def test_fast_losses_match_the_plain_formulas_to_the_bit(tiny_dataset, cfg):
    """The training step's shortcuts (cached batch tensors and L_trial targets, the PSTH's
    gather backward, the E units gathered from the time-major buffer) are speed only: the loss
    values and every parameter gradient equal the plain formulas' bit for bit, twice in a row
    (the second call uses the cache)."""
    from neurotrain.systems.ei_rnn.data import load_processed

    torch.manual_seed(0)
    task = EIRNNTask(load_processed(tiny_dataset["h5"]), cfg, torch.device("cpu"))
    idx = np.sort(task.train_idx)
    params = [p for p in task.model.parameters() if p.requires_grad]
    for _ in range(2):
        torch.manual_seed(1)
        fast, _ = task.losses(idx)
        fast_grads = torch.autograd.grad(sum(fast.values()), params, allow_unused=True)
        torch.manual_seed(1)
        plain = _plain_losses(task, idx)
        plain_grads = torch.autograd.grad(sum(plain.values()), params, allow_unused=True)
        for k in plain:
            assert torch.equal(fast[k], plain[k]), k
        for a, b in zip(fast_grads, plain_grads):
            assert (a is None and b is None) or torch.equal(a, b)


def test_condition_mean_gradient_is_the_products():
    from neurotrain.systems.ei_rnn.network import ConditionMean, condition_matrix

    g = torch.Generator().manual_seed(0)
    cond = torch.tensor([2, 0, 2, 1, 0, 2, 4])  # condition 3 has no trials
    x = torch.randn(7, 5, 3, generator=g, requires_grad=True)
    M = condition_matrix(cond, 5)
    up = torch.randn(5, 5, 3, generator=g)
    ref = (M @ x.reshape(7, -1)).reshape(5, 5, 3)
    out = ConditionMean.apply(x, cond, M)
    assert torch.equal(ref, out)
    assert torch.equal(*(torch.autograd.grad(y, x, up)[0] for y in (ref, out)))
    assert torch.equal(out[3], torch.zeros(5, 3))


def test_trials_split_whole_with_every_condition_on_every_side(tiny_dataset):
    """Trials are the independent items: each is wholly training, validation or test (no trial
    index in two parts), every trial is used, and every condition is seen in each part; the
    test trials stay the same when the validation fraction changes."""
    import h5py

    from neurotrain.systems.ei_rnn.data import stratified_split

    with h5py.File(tiny_dataset["h5"], "r") as h:
        train, val, test, cond = h["train_idx"][()], h["val_idx"][()], h["test_idx"][()], h["conditions"][()]
    parts = [set(x.tolist()) for x in (train, val, test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sorted([*train.tolist(), *val.tolist(), *test.tolist()]) == list(range(len(cond)))
    assert set(cond[train].tolist()) == set(cond[val].tolist()) == set(cond[test].tolist()) == set(cond.tolist())
    cond60 = np.repeat(np.arange(8), 60)
    a = stratified_split(cond60, 0.25, 0.2, seed=42)
    b = stratified_split(cond60, 0.1, 0.2, seed=42)
    assert np.array_equal(a[2], b[2]) and len(a[2]) == 8 * 12 and len(a[1]) == 8 * 15


def test_analysis_scores_the_test_trials_only(tiny_dataset, cfg, tmp_path):
    """The report's numbers come from the test trials: analysis reads outputs/test_*, and the
    noise ceiling is computed from the test trials' spikes; changing the validation trials'
    outputs changes nothing in metrics.json."""
    import copy
    import json
    import shutil

    from neurotrain.systems.ei_rnn.analyze import analyze
    from neurotrain.systems.ei_rnn.extract import extract
    from neurotrain.systems.ei_rnn.train import run_training

    short = copy.deepcopy(cfg)
    short["training"]["max_epochs"] = 2
    run_training(short, str(tiny_dataset["h5"]), str(tmp_path / "run" / "model"))
    extract(cfg, str(tmp_path / "run" / "model"), str(tiny_dataset["h5"]), str(tmp_path / "run"))
    first = analyze(cfg, str(tmp_path / "run"), str(tiny_dataset["h5"]))
    assert first["n_test_trials"] == len(np.load(tmp_path / "run" / "outputs" / "test_trial_conditions.npy"))
    for f in (tmp_path / "run" / "outputs").glob("val_*.npy"):
        arr = np.load(f)
        np.save(f, np.zeros_like(arr) if arr.dtype.kind == "f" else arr)
    shutil.rmtree(tmp_path / "run" / "metrics")
    shutil.rmtree(tmp_path / "run" / "population")
    second = analyze(cfg, str(tmp_path / "run"), str(tiny_dataset["h5"]))
    keep = lambda m: json.dumps({k: v for k, v in m.items() if k != "training"}, sort_keys=True, default=str)  # noqa: E731
    assert keep(first) == keep(second)
