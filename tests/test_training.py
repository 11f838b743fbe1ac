"""The torch training loop: logs, checkpoints, SIGTERM saves state, rerun resumes exactly."""

import json
import re
import os
import signal

import pytest
import torch

from neurotrain.errors import Interrupted
from neurotrain.systems.ei_rnn.train import run_training
from neurotrain.training.checkpoint import load_checkpoint

EPOCH_FIELDS = {"epoch", "train_loss", "val_loss", "val_correlation", "learning_rate", "epoch_time",
                "L_neuron", "L_trial", "L_reg"}
DETAIL_FIELDS = {"per_neuron_correlations", "E_mean_corr", "I_mean_corr", "h0_stats", "fano_model", "fano_real"}


def _cfg(cfg, epochs=6):
    cfg["training"].update(max_epochs=epochs, patience=100, checkpoint_every=2, detail_every=2, log_every=1)
    return cfg


def test_log_checkpoints_and_console(tiny_dataset, cfg, tmp_path, capsys):
    out = tmp_path / "model"
    summary = run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(out))
    log = json.loads((out / "training_log.json").read_text())
    assert len(log["history"]) == 6 and summary["total_epochs"] == 6
    for row in log["history"]:
        assert EPOCH_FIELDS <= set(row)
        assert (DETAIL_FIELDS <= set(row)) == (row["epoch"] % 2 == 0)
    assert len(log["history"][1]["per_neuron_correlations"]) == 12
    assert set(log["history"][1]["h0_stats"]) == {"mean", "std", "min", "max"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["model_epoch2.pt", "model_epoch4.pt", "model_epoch6.pt"]
    best = load_checkpoint(out / "model_best.pt")
    assert best["epoch"] == log["summary"]["best_epoch"]
    assert best["metrics"]["val_correlation"] == max(r["val_correlation"] for r in log["history"])
    assert load_checkpoint(out / "model_final.pt")["epoch"] == 6
    assert json.loads((out / "config.json").read_text())["config"]["training"]["max_epochs"] == 6
    err = capsys.readouterr().err
    assert "Epoch 2 | train_loss:" in err and "=== Epoch 2 Detailed Report ===" in err
    assert "E neurons: mean_corr=" in err and "Saved checkpoint: checkpoints/model_epoch2.pt" in err
    assert "TRAINING COMPLETE" in err and "Best validation correlation:" in err
    # the progress bar: epochs done, elapsed < remaining, and the rate
    assert re.search(r"\| 6/6 epochs \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(s/it|it/s)\]", err), err[-800:]


def test_early_stopping(tiny_dataset, cfg, tmp_path):
    c = _cfg(cfg, epochs=50)
    c["training"]["patience"] = 1
    c["training"]["learning_rate"] = 0.5  # wild steps: validation stops improving quickly
    summary = run_training(c, str(tiny_dataset["h5"]), str(tmp_path / "m"))
    assert summary["stop_reason"] == "early_stopping" and summary["total_epochs"] < 50


def test_sigterm_saves_state_and_rerun_resumes_exactly(tiny_dataset, cfg, tmp_path, monkeypatch):
    from neurotrain.systems.ei_rnn import train as ei_rnn

    full = tmp_path / "full"
    run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(full))

    cut = tmp_path / "cut"
    original = ei_rnn.EIRNNTask.train_epoch
    calls = {"n": 0}

    def killed_at_epoch_3(self, rng, step):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled by the loop
        return original(self, rng, step)

    monkeypatch.setattr(ei_rnn.EIRNNTask, "train_epoch", killed_at_epoch_3)
    with pytest.raises(Interrupted):
        run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(cut))
    last = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert last["progress"]["epoch"] == 3
    assert not (cut / "model_final.pt").exists()
    monkeypatch.setattr(ei_rnn.EIRNNTask, "train_epoch", original)

    summary = run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(cut))
    assert summary["resumed_from_epoch"] == 3
    a, b = load_checkpoint(full / "model_final.pt"), load_checkpoint(cut / "model_final.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    la = json.loads((full / "training_log.json").read_text())["history"]
    lb = json.loads((cut / "training_log.json").read_text())["history"]
    assert [r["train_loss"] for r in la] == [r["train_loss"] for r in lb]
    assert not (cut / "checkpoints" / "last.pt").exists()


def test_changed_config_does_not_resume(tiny_dataset, cfg, tmp_path, monkeypatch):
    from neurotrain.systems.ei_rnn import train as ei_rnn

    out = tmp_path / "m"
    original = ei_rnn.EIRNNTask.train_epoch

    def interrupt(self, rng, step):
        os.kill(os.getpid(), signal.SIGINT)
        return original(self, rng, step)

    monkeypatch.setattr(ei_rnn.EIRNNTask, "train_epoch", interrupt)
    with pytest.raises(Interrupted):
        run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(out))
    monkeypatch.setattr(ei_rnn.EIRNNTask, "train_epoch", original)
    c = _cfg(cfg)
    c["training"]["learning_rate"] = 2e-3
    summary = run_training(c, str(tiny_dataset["h5"]), str(out))
    assert summary["resumed_from_epoch"] is None


def test_dt_mismatch_is_named(tiny_dataset, cfg, tmp_path):
    from neurotrain.errors import NeurotrainError

    cfg["model"]["dt"] = 10.0
    with pytest.raises(NeurotrainError, match="ei_rnn.model.dt"):
        run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def _interrupt_at(monkeypatch, epoch):
    from neurotrain.systems.ei_rnn import train as ei_rnn

    original = ei_rnn.EIRNNTask.train_epoch
    calls = {"n": 0}

    def patched(self, rng, step):
        calls["n"] += 1
        if calls["n"] == epoch:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, rng, step)

    monkeypatch.setattr(ei_rnn.EIRNNTask, "train_epoch", patched)
    return lambda: monkeypatch.setattr(ei_rnn.EIRNNTask, "train_epoch", original)


def test_cosmetic_change_still_resumes(tiny_dataset, cfg, tmp_path, monkeypatch):
    out = tmp_path / "m"
    restore = _interrupt_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(out))
    restore()
    c = _cfg(cfg, epochs=8)
    c["training"]["log_every"] = 4
    summary = run_training(c, str(tiny_dataset["h5"]), str(out))
    assert summary["resumed_from_epoch"] == 3 and summary["total_epochs"] == 8


def test_corrupt_last_checkpoint_falls_back_to_periodic(tiny_dataset, cfg, tmp_path, monkeypatch, caplog):
    full = tmp_path / "full"
    run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(full))
    out = tmp_path / "m"
    restore = _interrupt_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(out))
    restore()
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])  # a kill while writing would not do this (atomic), a disk fault might
    summary = run_training(_cfg(cfg), str(tiny_dataset["h5"]), str(out))
    assert summary["resumed_from_epoch"] == 2  # model_epoch2.pt
    assert "Cannot resume from" in caplog.text
    a, b = load_checkpoint(full / "model_final.pt"), load_checkpoint(out / "model_final.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_learning_rate_logged_is_the_one_used(tiny_dataset, cfg, tmp_path):
    c = _cfg(cfg, epochs=8)
    c["training"].update(lr_patience=0, lr_factor=0.5)  # cut the rate after every non-improving epoch
    run_training(c, str(tiny_dataset["h5"]), str(tmp_path / "m"))
    h = json.loads((tmp_path / "m" / "training_log.json").read_text())["history"]
    assert h[0]["learning_rate"] == c["training"]["learning_rate"]


def test_two_processes_give_identical_weights(tiny_dataset, tmp_path):
    import shutil
    import subprocess

    from conftest import NEUROTRAIN

    params = json.dumps({"training": {"max_epochs": 3, "checkpoint_every": 3, "detail_every": 3},
                         "data": {"embedded": {"n_exc": 8, "n_inh": 4, "n_conditions": 3, "trials_per_condition": 8,
                                               "n_time": 16}},
                         "model": {"input_embed_dim": 8, "attention_dim": 4}})
    shutil.copy(tiny_dataset["h5"], tmp_path / "processed.h5")
    for name in ("a", "b"):
        r = subprocess.run([NEUROTRAIN, "train", "--system", "ei_rnn", "--params", params, "--data", "processed.h5",
                            "--out-dir", name], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(tmp_path / "a" / "model_final.pt"), load_checkpoint(tmp_path / "b" / "model_final.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_checkpoint_holds_a_stage_config_slice(tmp_path):
    """A stage's strict config slice (a dict subclass) is saved as plain dicts, which
    torch.load(weights_only=True) reads back (lisbet's train stage declares part of a block)."""
    from neurotrain.config import stage_config
    from neurotrain.training.checkpoint import load_checkpoint, save_checkpoint

    cfg = stage_config("lisbet", "train")
    save_checkpoint(tmp_path / "c.pt", {"config": {"training": cfg["training"]}, "x": torch.zeros(2)})
    back = load_checkpoint(tmp_path / "c.pt")
    assert type(back["config"]["training"]) is dict and back["config"]["training"]["seed"] == cfg["training"]["seed"]
    assert "embed_batch" not in back["config"]["training"]


def _same_models(a_dir, b_dir):
    for kind in ("final", "best"):
        a, b = load_checkpoint(a_dir / f"model_{kind}.pt"), load_checkpoint(b_dir / f"model_{kind}.pt")
        assert a["epoch"] == b["epoch"], kind
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (kind, k)


@pytest.mark.parametrize("lowered", [2, 3])
def test_lowered_max_epochs_ends_where_a_fresh_run_would(tiny_dataset, cfg, tmp_path, lowered):
    """max_epochs may change between runs without a fresh start (it is resume-neutral), but a run
    that got past the new value must not report it: lowered to 2 it resumes from the epoch-2
    state, lowered to 3 from the epoch-2 state and trains one epoch; both equal a fresh run."""
    import copy

    done = tmp_path / "done"
    run_training(_cfg(copy.deepcopy(cfg), epochs=4), str(tiny_dataset["h5"]), str(done))
    summary = run_training(_cfg(copy.deepcopy(cfg), epochs=lowered), str(tiny_dataset["h5"]), str(done))
    assert summary["total_epochs"] == lowered and summary["resumed_from_epoch"] == 2
    fresh = tmp_path / "fresh"
    run_training(_cfg(copy.deepcopy(cfg), epochs=lowered), str(tiny_dataset["h5"]), str(fresh))
    _same_models(done, fresh)
    assert len(json.loads((done / "training_log.json").read_text())["history"]) == lowered


def test_lowered_patience_ends_where_early_stopping_would(tiny_dataset, cfg, tmp_path):
    """patience lowered below the run's bad streak: the rerun stops where a fresh run with the new
    patience stops (resuming from an earlier state or starting fresh), not at the old epoch."""
    import copy

    c = _cfg(copy.deepcopy(cfg), epochs=12)
    c["training"]["learning_rate"] = 0.5  # validation stops improving quickly
    out = tmp_path / "m"
    run_training(copy.deepcopy(c), str(tiny_dataset["h5"]), str(out))
    c["training"]["patience"] = 1
    summary = run_training(copy.deepcopy(c), str(tiny_dataset["h5"]), str(out))
    fresh = tmp_path / "fresh"
    expected = run_training(copy.deepcopy(c), str(tiny_dataset["h5"]), str(fresh))
    assert expected["stop_reason"] == "early_stopping" and expected["total_epochs"] < 12
    assert summary["total_epochs"] == expected["total_epochs"] and summary["stop_reason"] == "early_stopping"
    _same_models(out, fresh)


def test_saved_checkpoints_are_byte_identical(tmp_path):
    """The same state saved twice (each through its own random temporary file) gives the same bytes."""
    from neurotrain.training.checkpoint import save_checkpoint

    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "progress": {"epoch": 3}}
    save_checkpoint(tmp_path / "a.pt", state)
    save_checkpoint(tmp_path / "b.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_untrained_reference_is_the_training_runs_initial_network(tiny_dataset, cfg, tmp_path, monkeypatch):
    """The E-I RNN's untrained reference (extract: seed every generator, then build the task, as
    run_preamble and run_training do) holds exactly the weights training started from."""
    import torch

    from neurotrain.systems.ei_rnn import train as tr
    from neurotrain.systems.ei_rnn.data import load_processed
    from neurotrain.training.checkpoint import seed_everything

    seen = []
    real = tr.EIRNNTask.__init__

    def recording(self, *a, **k):
        real(self, *a, **k)
        seen.append({n: v.detach().clone() for n, v in self.model.state_dict().items()})

    monkeypatch.setattr(tr.EIRNNTask, "__init__", recording)
    run_training(_cfg(cfg, 2), str(tiny_dataset["h5"]), str(tmp_path / "m"))
    monkeypatch.undo()
    ck = load_checkpoint(tmp_path / "m" / "model_final.pt")
    seed_everything(ck["config"]["training"]["seed"])
    task = tr.EIRNNTask(load_processed(tiny_dataset["h5"]), ck["config"], torch.device("cpu"),
                        eval_seed=ck["config"]["training"]["seed"] + 1)
    assert seen and all(torch.equal(task.model.state_dict()[n], v) for n, v in seen[0].items())
    assert not all(torch.equal(ck["model"][n], v) for n, v in seen[0].items())  # training moved them
