"""Config schema: defaults are the seed's values; unknown keys and wrong types are named."""

import subprocess

from conftest import NEUROTRAIN

import pytest
import yaml

from neurotrain.config import load_config, system_slice, validate
from neurotrain.errors import NeurotrainError


def test_defaults_are_seed_values():
    c = validate({})["ei_rnn"]
    assert c["model"] == {"input_embed_dim": 56, "input_embed_type": "attention", "attention_heads": 4,
                          "attention_dim": 16, "learnable_h0": True, "h0_init": 0.1, "tau": 50.0,
                          "noise_scale": 0.1, "dt": 25.0, "spectral_radius": 0.9}
    assert c["loss"]["use_grad_balancing"] is True
    assert (c["loss"]["ltrial_scale"], c["loss"]["lambda_reg"], c["loss"]["lambda_scale"], c["loss"]["lambda_var"]) == (0.5, 1e-4, 0.1, 0.05)
    t = c["training"]
    assert (t["max_epochs"], t["patience"], t["learning_rate"], t["gradient_clip"], t["seed"]) == (2000, 300, 1e-3, 1.0, 42)
    assert (t["lr_factor"], t["lr_patience"], t["min_lr"]) == (0.5, 50, 1e-5)
    assert (t["checkpoint_every"], t["log_every"], t["detail_every"]) == (100, 10, 100)


@pytest.mark.parametrize("cfg,key", [
    ({"bogus": 1}, "bogus"),
    ({"ei_rnn": {"training": {"max_epoch": 5}}}, "ei_rnn.training.max_epoch"),
    ({"ei_rnn": {"model": {"spectral_radius": "big"}}}, "ei_rnn.model.spectral_radius"),
    ({"ei_rnn": {"training": {"max_epochs": 2.5}}}, "ei_rnn.training.max_epochs"),
    ({"ei_rnn": {"data": {"source": "nwb"}}}, "ei_rnn.data.source"),
    ({"systems": ["nope"]}, "systems.0"),
])
def test_bad_keys_are_named(cfg, key):
    with pytest.raises(NeurotrainError) as exc:
        validate(cfg)
    assert key in str(exc.value)


def test_config_files_validate(root):
    names = sorted(p.name for p in (root / "config").glob("*.yaml"))
    assert {"config.yaml", "smoke.yaml", "ei_rnn_seed.yaml", "cebra_rat.yaml"} <= set(names)
    for name in names:
        load_config(root / "config" / name)
    seed = load_config(root / "config" / "ei_rnn_seed.yaml")["ei_rnn"]
    assert seed == validate({})["ei_rnn"], "the seed config must hold exactly the seed's values"


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ei_rnn: [unclosed\n")
    with pytest.raises(NeurotrainError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(NeurotrainError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_params_slice_validated():
    with pytest.raises(NeurotrainError, match="ei_rnn.training.nope"):
        system_slice("ei_rnn", params_json='{"training": {"nope": 1}}')
    with pytest.raises(NeurotrainError, match="unknown system"):
        system_slice("zebra", params_json="{}")


def test_cli_rejects_unknown_key(tmp_path, tiny_dataset):
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"ei_rnn": {"training": {"epochz": 3}}}))
    out = tmp_path / "p.h5"
    r = subprocess.run([NEUROTRAIN, "preprocess", "--system", "ei_rnn", "--config", str(bad), "--raw",
                        str(tiny_dataset["raw"]), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "ei_rnn.training.epochz" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
