"""Config schema: defaults are the seed's values; unknown keys and wrong types are named."""

import json
import subprocess

from conftest import NEUROTRAIN, ROOT

import pytest
import yaml

from neurotrain import registry
from neurotrain.config import (UndeclaredConfigKey, load_config, reference_markdown, slice_block, stage_config,
                               system_defaults, validate)
from neurotrain.spec import STAGES
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
        stage_config("ei_rnn", "train", params_json='{"training": {"nope": 1}}')
    with pytest.raises(NeurotrainError, match="unknown system"):
        stage_config("zebra", "train", params_json="{}")


def test_cli_rejects_unknown_key(tmp_path, tiny_dataset):
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"ei_rnn": {"training": {"epochz": 3}}}))
    out = tmp_path / "p.h5"
    (tmp_path / "raw").symlink_to(tiny_dataset["raw"])
    r = subprocess.run([NEUROTRAIN, "preprocess", "--system", "ei_rnn", "--config", "c.yaml", "--raw", "raw",
                        "--out", "p.h5"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert "ei_rnn.training.epochz" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


# ------------------------------------------------------------------------------ strict stage slices


def _leaves(block: dict, prefix: str = ""):
    for k, v in block.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            yield from _leaves(v, key)
        else:
            yield key


def _read(cfg, dotted: str):
    node = cfg
    for k in dotted.split("."):
        node = node[k]
    return node


def _covered(dotted: str, reads) -> bool:
    return any(dotted == r or dotted.startswith(r + ".") for r in reads)


@pytest.mark.parametrize("system,stage", [(s, st) for s in registry.names() for st in STAGES])
def test_stage_reads_exactly_its_declared_keys(system, stage):
    """Every stage of every system gets the user's value of each key it declares, and reading any
    other key raises an error that names the stage and the key (no silent schema default)."""
    reads = registry.spec(system).stages[stage].reads
    block = system_defaults(system)
    cfg = stage_config(system, stage, params_json=json.dumps(slice_block(block, reads)))
    leaves = list(_leaves(block))
    for dotted in leaves:
        if _covered(dotted, reads):
            assert _read(cfg, dotted) == _read(block, dotted), dotted
            continue
        with pytest.raises(UndeclaredConfigKey) as info:
            _read(cfg, dotted)
        assert f"stage {system}.{stage}" in str(info.value)
        assert (system + "." + dotted).startswith(info.value.key), (dotted, info.value.key)
    undeclared = [d for d in leaves if not _covered(d, reads)]
    if undeclared:  # .get() and `in` are refused too, not answered with a default
        top = undeclared[0].split(".")[0]
        if not any(r.split(".")[0] == top for r in reads):
            with pytest.raises(UndeclaredConfigKey):
                cfg.get(top, {})
            with pytest.raises(UndeclaredConfigKey):
                assert top in cfg


def test_stage_sees_the_users_value_not_the_default():
    """A declared key carries the user's value through the rule's JSON slice; an undeclared one is
    refused rather than refilled from the schema (the bug of the old system_slice)."""
    block = system_defaults("cpc_snn")
    block["data"]["injection"]["snr_max"] = 99.0
    block["training"]["seed"] = 5
    reads = registry.spec("cpc_snn").stages["analyze"].reads
    cfg = stage_config("cpc_snn", "analyze", params_json=json.dumps(slice_block(block, reads)))
    assert cfg["data"]["injection"]["snr_max"] == 99.0
    with pytest.raises(UndeclaredConfigKey, match=r"stage cpc_snn.analyze reads config key cpc_snn.training"):
        cfg["training"]
    with pytest.raises(UndeclaredConfigKey, match=r"cpc_snn.data.source"):
        cfg["data"]["source"]


def test_configuration_reference_is_generated_from_the_schema(root):
    """docs/configuration.md is the schema's reference; `make docs` rewrites it."""
    assert (root / "docs" / "configuration.md").read_text() == reference_markdown(), "run `make docs`"


# --------------------------------------------------------------------------- the run sheet
def _sheet(runs, systems=("ei_rnn",)):
    from neurotrain.runs import run_sheet

    return run_sheet(validate({"systems": list(systems), "runs": runs}))


def test_run_sheet_defaults_and_overrides():
    """One `default` run per listed system with its training.seed; a named run merges its
    overrides into the system's block and sets training.seed per replicate."""
    from neurotrain.runs import run_sheet

    default = run_sheet(validate({"systems": ["ei_rnn", "cpc_snn"]}))
    assert [(r.system, r.name, r.seeds) for r in default] == [("ei_rnn", "default", (42,)), ("cpc_snn", "default", (0,))]
    assert default[0].seed_folder(42) == "results/ei_rnn/default/seed42"
    assert default[0].processed == "data/processed/ei_rnn.h5"
    (fast,) = _sheet([{"name": "fast", "system": "ei_rnn", "seeds": [1, 2], "config": {"training": {"max_epochs": 7}}}])
    assert fast.config(2)["training"] == {**validate({})["ei_rnn"]["training"], "max_epochs": 7, "seed": 2}
    assert fast.processed == "data/processed/ei_rnn.h5"  # preprocessing reads none of its overrides
    with pytest.raises(NeurotrainError, match="has no seed 3"):
        fast.config(3)
    # a run that changes what preprocessing reads gets its own processed file
    (wide,) = _sheet([{"name": "wide", "system": "cpc_snn", "seeds": [0],
                       "config": {"model": {"encoder": {"kernels": [8, 8, 8, 8]}}}}], systems=("cpc_snn",))
    assert wide.processed == "data/processed/cpc_snn-wide.h5"


@pytest.mark.parametrize("runs,key", [
    ([{"name": "a", "system": "ei_rnn", "seeds": [1], "config": {"data": {"val_fraction": 0.3}}}], "runs.0.config.data"),
    ([{"name": "a", "system": "ei_rnn", "seeds": [1], "config": {"training": {"seed": 3}}}], "runs.0.config.training.seed"),
    ([{"name": "a", "system": "ei_rnn", "seeds": [1], "config": {"training": {"max_epochs": 0}}}],
     "runs.0.config.training.max_epochs"),
    ([{"name": "a", "system": "ei_rnn", "seeds": [1], "config": {"trainin": {}}}], "runs.0.config.trainin"),
    ([{"name": "a", "system": "ei_rnn", "seeds": [1]}, {"name": "a", "system": "ei_rnn", "seeds": [2]}], "runs.1.name"),
    ([{"name": "a/b", "system": "ei_rnn", "seeds": [1]}], "runs.0.name"),
    ([{"name": "a", "system": "zebra", "seeds": [1]}], "runs.0.system"),
    ([{"name": "a", "system": "ei_rnn", "seeds": []}], "runs.0.seeds"),
    ([{"name": "a", "system": "ei_rnn", "seeds": [1, 1]}], "runs.0.seeds"),
    ([{"name": "a", "system": "ei_rnn", "seeds": [2**32]}], "runs.0.seeds.0"),  # numpy's seeds are 32-bit
    ([{"name": "a", "system": "ei_rnn", "seeds": [1]}, {"name": "A", "system": "ei_rnn", "seeds": [2]}], "runs.1.name"),
    ([{"name": "runs.md", "system": "ei_rnn", "seeds": [1]}], "runs.0.name"),  # the system's comparison page
    ([{"name": "a", "system": "ei_rnn", "seeds": [1], "config": {"training": 5}}], "runs.0.config.training"),
    ([{"name": "a", "system": "ei_rnn", "seeds": [1], "config": {"training": ["seed"]}}], "runs.0.config.training"),
    ([{"name": "a", "system": "ei_rnn", "seeds": [1], "config": {"model.attention_dim": 8}}],
     "runs.0.config.model.attention_dim"),
])
def test_run_sheet_refusals_name_the_key(runs, key):
    with pytest.raises(NeurotrainError) as exc:
        _sheet(runs)
    assert f"config key {key}" in str(exc.value) or f"config key {key}:" in str(exc.value), str(exc.value)


@pytest.mark.parametrize("system", ["ei_rnn", "cebra", "ring_attractor", "lisbet", "cpc_snn"])
@pytest.mark.parametrize("seed", [-1, 2**32])
def test_every_seed_key_is_a_32_bit_unsigned_integer(system, seed):
    """numpy's legacy seeding (np.random.seed, which the torch systems call) takes 0 .. 2**32 - 1:
    a seed outside is refused with its key, not deep inside training."""
    with pytest.raises(NeurotrainError, match=rf"config key {system}.training.seed"):
        validate({system: {"training": {"seed": seed}}})


def test_a_run_of_a_system_without_runs_is_named_so():
    from neurotrain.runs import find

    with pytest.raises(NeurotrainError, match="cebra has no run .it is not in `systems`"):
        find(_sheet([]), "cebra", "default")


def test_every_preset_is_a_named_run_of_its_own():
    """The preset files in config/ name their own run, so running them in turn keeps each one's
    results (none lands in the default run's folder)."""
    presets = [p for p in sorted((ROOT / "config").glob("*.yaml")) if p.name not in ("config.yaml", "smoke.yaml",
                                                                                     "replicates.yaml")]
    assert len(presets) >= 6
    from neurotrain.runs import run_sheet

    for p in presets:
        config = load_config([ROOT / "config" / "config.yaml", p])
        built = [r for r in run_sheet(config) if r.system in config["systems"]]
        assert built and all(r.name != "default" for r in built), (p.name, built)


def test_cli_stage_config_of_a_run_and_seed(tmp_path):
    """`neurotrain <stage> --config FILE --run NAME --seed K` reads that replicate's block."""
    f = tmp_path / "c.yaml"
    f.write_text("runs:\n  - {name: fast, system: ei_rnn, seeds: [5, 6], config: {training: {max_epochs: 9}}}\n")
    cfg = stage_config("ei_rnn", "train", f, run="fast", seed=6)
    assert cfg["training"]["seed"] == 6 and cfg["training"]["max_epochs"] == 9
    assert stage_config("ei_rnn", "train", f, run="fast")["training"]["seed"] == 5
    with pytest.raises(NeurotrainError, match=r"run ei_rnn/slow: not in the run sheet .*runs: fast"):
        stage_config("ei_rnn", "train", f, run="slow")
    r = subprocess.run([NEUROTRAIN, "train", "--system", "ei_rnn", "--config", "c.yaml", "--run", "fast", "--seed", "7",
                        "--data", "x.h5", "--out-dir", "m"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == \
        "error: run ei_rnn/fast: has no seed 7 (its seeds: 5, 6)"
    assert not (tmp_path / "m").exists()
    with pytest.raises(NeurotrainError, match="^--seed: "):  # a seed of the block as it is, still checked
        stage_config("ei_rnn", "train", f, seed=-5)


def test_several_config_files_merge_as_snakemake_merges_them(tmp_path):
    """`neurotrain <stage> --config base.yaml runs.yaml --run R`: the files merge in order (a later
    key replaces an earlier one), so a stage run by hand reads what Snakemake's
    `--configfile base.yaml runs.yaml` gave the rule."""
    base, sheet = tmp_path / "base.yaml", tmp_path / "runs.yaml"
    base.write_text("ei_rnn:\n  training:\n    max_epochs: 4\n    patience: 3\n")
    sheet.write_text("ei_rnn:\n  training:\n    patience: 2\n"
                     "runs:\n  - {name: small, system: ei_rnn, seeds: [5], config: {model: {attention_dim: 4}}}\n")
    cfg = stage_config("ei_rnn", "train", [base, sheet], run="small")
    assert (cfg["training"]["max_epochs"], cfg["training"]["patience"], cfg["training"]["seed"]) == (4, 2, 5)
    assert cfg["model"]["attention_dim"] == 4
    r = subprocess.run([NEUROTRAIN, "train", "--system", "ei_rnn", "--config", "base.yaml", "runs.yaml", "--run", "nope",
                        "--data", "x.h5", "--out-dir", "m"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "run ei_rnn/nope: not in the run sheet" in r.stderr.strip().splitlines()[-1]
