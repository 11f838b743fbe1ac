"""Snakemake as a user drives it: the smoke config end to end, every contract file with its
documented shape, reruns limited to what changed, lint and format clean, bad config rejected."""

import contextlib
import json
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, log_dir, seed_dir, snakemake_env, workflow_copy

ROOT_SRC = ROOT / "src"
SMOKE_SYSTEMS = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())["systems"]

pytestmark = pytest.mark.slow


def smk(wd: Path, *args, check=True, env=None):
    r = subprocess.run(["snakemake", "--cores", "2", "--configfile", "config/smoke.yaml", *args], cwd=wd,
                       capture_output=True, text=True, env={**snakemake_env(), **(env or {})}, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def planned_jobs(wd: Path) -> dict:
    """Job counts of a dry run (rule name -> count), from Snakemake's job stats table."""
    out = smk(wd, "-n").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    wd = workflow_copy(tmp_path_factory.mktemp("wf"))
    smk(wd, env={"NEUROTRAIN_RECORD_IMPORTS": str(wd / "imports")})  # each job lists the modules it ran
    return wd


def test_contract_files_and_shapes(finished):
    run = finished / seed_dir("ei_rnn")
    m = json.loads((run / "metrics.json").read_text())
    N, T = 12, 16
    n_exc = 8
    cfg = json.loads((run / "model" / "config.json").read_text())
    n_val = cfg["n_val_trials"]
    n_pcs = 3
    shapes = {
        "weights/W_rec.npy": (N, N), "weights/W_in.npy": (N, 8), "weights/W_out.npy": (2, n_exc),
        "weights/h0.npy": (N,), "weights/input_embed_linear.npy": (8, 4 * 4),
        "weights/E_mask.npy": (N,), "weights/I_mask.npy": (N,), "weights/attention_maps.npy": (4, 4, 4),
        "outputs/val_model_rates.npy": (n_val, T, N), "outputs/val_target_rates.npy": (n_val, T, N),
        "outputs/val_model_psth.npy": (T, N), "outputs/val_target_psth.npy": (T, N),
        "outputs/val_trial_conditions.npy": (n_val,),
        "population/pca_real.npy": (T, n_pcs), "population/pca_model.npy": (T, n_pcs),
        "population/pca_components.npy": (n_pcs, N), "population/pca_explained_variance.npy": (n_pcs,),
    }
    for name in ("correlation", "mean_rate_model", "mean_rate_target", "variance_model", "variance_target",
                 "fano_model", "fano_target"):
        shapes[f"metrics/per_neuron_{name}.npy"] = (N,)
    shapes["metrics/neuron_ei_labels.npy"] = (N,)
    for rel, shape in shapes.items():
        arr = np.load(run / rel, allow_pickle=False)
        assert arr.shape == shape, rel
        assert np.all(np.isfinite(arr)) or arr.dtype == bool, rel
    att = np.load(run / "weights" / "attention_weights.npy", allow_pickle=False)
    assert att["Q"].shape == (4 * 4, 4) and att["K"].shape == (4 * 4, 4) and att["V"].shape == (4, 4)
    w, e = np.load(run / "weights/W_rec.npy"), np.load(run / "weights/E_mask.npy")
    assert (w[:, e] >= 0).all() and (w[:, ~e] <= 0).all() and m["dale_violations"] == 0
    for f in ("model_best.pt", "model_final.pt", "training_log.json", "config.json", "checkpoints/model_epoch2.pt"):
        assert (run / "model" / f).is_file(), f
    figs = {"training_curves", "per_neuron_correlation_histogram", "per_neuron_correlation_scatter",
            "best_worst_neurons", "weight_matrices", "h0_distribution", "attention_patterns",
            "pca_trajectories", "pca_state_space", "fano_factor_comparison"}
    for f in figs:
        assert (run / "figures" / f"{f}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
    report = (run / "training_report.md").read_text()
    for heading in ("# Final Model Training Report", "## Training Summary", "## Final Metrics",
                    "## Model Configuration", "## Saved Files", "## Code Snippets for Analysis"):
        assert heading in report
    assert f"{m['noise_ceiling']:.3f}" in report and "Fraction of noise ceiling" in report
    assert (finished / log_dir("ei_rnn") / "render_report.log").exists()
    assert (finished / seed_dir("ei_rnn").replace("results/", "results/benchmarks/", 1) / "train_model.tsv").exists()


def test_every_stage_log_ends_with_its_peak_memory(finished):
    """Each rule's log ends with the stage's exact peak memory (getrusage), which the benchmark
    summary reads: Snakemake's benchmark files only sample it."""
    logs = sorted((finished / "results" / "logs").rglob("*.log"))
    assert len(logs) >= 35
    for log in logs:
        last = log.read_text().strip().splitlines()[-1]
        m = re.fullmatch(r"peak memory: (\d+) MB \(max RSS of this stage\)", last)
        assert m and 20 < int(m.group(1)) < 24 * 1024, (log, last)


def test_noop_rerun(finished):
    assert planned_jobs(finished) == {}


def test_every_module_a_stage_ran_is_one_of_its_code_inputs(finished):
    """The rules list each stage's static import closure as code inputs; every package module a
    stage really imported in the smoke run (recorded by the runner) must be among them, for
    every stage of every system, so no edit of code a stage runs goes unnoticed."""
    from neurotrain import registry

    recorded = sorted((finished / "imports").glob("*.json"))
    assert len(recorded) == len(SMOKE_SYSTEMS) * 8 + 1  # seven stages and the seeds pooled per system, the index
    for f in recorded:
        system, stage = f.stem.split(".")
        ran = {"neurotrain/" + p.rsplit("/src/neurotrain/", 1)[1] for p in json.loads(f.read_text())}
        if system == "_":  # the project report (stage index)
            code = registry.index_code(SMOKE_SYSTEMS)
        elif stage == "aggregate":  # a run's seeds pooled
            code = registry.aggregate_code(system)
        else:
            code = registry.stage_code(system, stage)
        inputs = {p.relative_to(ROOT_SRC).as_posix() for p in code}
        assert ran, f.name
        assert ran <= inputs, f"{system} {stage} ran {sorted(map(str, ran - inputs))}, not among its code inputs"


@contextlib.contextmanager
def _edited(*paths: Path):
    """``paths`` edited inside the block (a comment appended: Snakemake compares checksums, so a
    touch alone is not an edit); their bytes and mtimes put back after it, so that the module's
    finished workflow is unchanged for the tests after this one."""
    before = {p: (p.read_bytes(), p.stat().st_mtime) for p in paths}
    try:
        for p, (data, _) in before.items():
            p.write_bytes(data + (b"\n{# edited #}\n" if p.suffix == ".j2" else b"\n# edited\n"))
        yield
    finally:
        for p, (data, t) in before.items():
            p.write_bytes(data)
            os.utime(p, (t, t))


def _edit_plans(wd: Path, rel_files: list[str]) -> dict[str, set[str]]:
    """The jobs `snakemake -n` plans after ``rel_files`` (under src/neurotrain) are edited
    (:func:`_edited`), per system: {system: {rule, ...}}."""
    with _edited(*(wd / "src" / "neurotrain" / r for r in rel_files)):
        out = smk(wd, "-n").stdout
    plans: dict[str, set[str]] = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    wildcards: system=(\w+)", out, re.M):
        plans.setdefault(m.group(2), set()).add(m.group(1))
    if re.search(r"^(?:local)?rule index_report:", out, re.M):
        plans.setdefault("index", set()).add("index_report")
    return plans


STAGE_RULE = {"generate": "generate_dataset", "preprocess": "preprocess_dataset", "train": "train_model",
              "extract": "extract_model", "analyze": "analyze_population", "figures": "render_figures",
              "report": "render_report", "aggregate": "aggregate_run"}
DOWNSTREAM = {"generate": ("preprocess", "analyze"), "preprocess": ("train", "extract", "analyze"),
              "train": ("extract", "figures"),
              "extract": ("analyze", "figures"), "analyze": ("figures", "report"), "figures": ("report",), "report": ("aggregate",),
              "aggregate": ()}


def _expected(system: str, rel: str) -> set[str]:
    """Rules of ``system`` a change of package file ``rel`` must rerun: every stage whose code
    inputs hold it, and everything downstream of those; no other."""
    from neurotrain import registry

    target = ROOT_SRC / "neurotrain" / rel
    todo = [st for st in STAGE_RULE if target in (registry.aggregate_code(system) if st == "aggregate"
                                                   else registry.stage_code(system, st))]
    hit: set[str] = set()
    while todo:
        st = todo.pop()
        if st not in hit:
            hit.add(st)
            todo.extend(DOWNSTREAM[st])
    rules = {STAGE_RULE[s] for s in hit}
    if "train_model" in rules and registry.spec(system).framework == "jax":
        rules = (rules - {"train_model"}) | {"train_model_jax"}
    return rules


@pytest.mark.parametrize("stage_module", ["data.py", "train.py", "extract.py", "analyze.py", "figures.py",
                                          "report.md.j2", "network.py"])
def test_editing_a_stage_module_reruns_exactly_its_stages(finished, stage_module):
    """For every system at once: edit the system's own module, and the dry run plans exactly the
    stages whose import closure holds it (and what follows them), nothing else."""
    _private_src(finished)
    rels = [f"systems/{s}/{stage_module}" for s in SMOKE_SYSTEMS
            if (ROOT_SRC / "neurotrain" / "systems" / s / stage_module).exists()]
    plans = _edit_plans(finished, rels)
    for rel in rels:
        system = rel.split("/")[1]
        assert plans.get(system, set()) == _expected(system, rel), (rel, plans.get(system))


@pytest.mark.parametrize("shared", ["training/torch_loop.py", "training/jax_loop.py", "training/runstate.py",
                                    "training/torch_numerics.py", "stats.py", "plotting.py", "splits.py",
                                    "matlab.py", "reports/render.py", "runner.py"])
def test_editing_a_shared_module_reruns_exactly_the_stages_that_run_it(finished, shared):
    _private_src(finished)
    plans = _edit_plans(finished, [shared])
    for system in SMOKE_SYSTEMS:
        assert plans.get(system, set()) == _expected(system, shared), (system, shared, plans.get(system))


def _job_outputs(system: str, stage: str) -> list[str]:
    """What Snakemake deletes when a job of ``stage`` fails or is killed."""
    from neurotrain import registry
    from neurotrain.spec import FRAMEWORKS

    ext = FRAMEWORKS[registry.spec(system).framework]
    r = seed_dir(system)
    return {"preprocess": [f"data/processed/{system}.h5"],
            "train": [f"{r}/model/model_best.{ext}", f"{r}/model/model_final.{ext}", f"{r}/model/training_log.json",
                      f"{r}/model/config.json"],
            "extract": [f"{r}/weights", f"{r}/outputs"], "analyze": [f"{r}/metrics", f"{r}/population",
                                                                     f"{r}/metrics.json"],
            "figures": [f"{r}/figures"], "report": [f"{r}/training_report.md"]}[stage]


# (stage, what is edited before its job is killed): a config key the stage reads, or its code
INTERRUPTED = [("ei_rnn", "preprocess", ("data", "val_fraction", 0.3)), ("ei_rnn", "train", ("training", "learning_rate", 2e-3)),
               ("ei_rnn", "extract", "systems/ei_rnn/extract.py"), ("ei_rnn", "analyze", ("analysis", "n_pcs", 2)),
               ("ei_rnn", "figures", "systems/ei_rnn/figures.py"), ("ei_rnn", "report", "systems/ei_rnn/report.md.j2"),
               ("cpc_snn", "train", ("training", "classification_weight", 0.5)),
               ("cpc_snn", "extract", "systems/cpc_snn/extract.py"), ("cpc_snn", "analyze", "systems/cpc_snn/analyze.py"),
               ("cpc_snn", "figures", "systems/cpc_snn/figures.py")]


@pytest.mark.parametrize("system,stage,edit", INTERRUPTED, ids=[f"{a}-{b}" for a, b, _ in INTERRUPTED])
def test_an_edit_then_a_killed_job_is_rebuilt_with_what_follows(finished, system, stage, edit):
    """After an edit, the job of the stage it concerns is killed: Snakemake deletes that job's
    outputs, and by its design does not rebuild a missing intermediate whose downstream files look
    current. Every rule's code inputs and params carry everything its artifacts derive from, so
    the rerun plans the killed stage and everything after it, never "Nothing to be done"."""
    import shutil

    from neurotrain.spec import INPUTS_FROM

    _private_src(finished)
    smoke = finished / "config" / "smoke.yaml"
    config_text = smoke.read_text()
    backup = finished / ".killed"
    code = None
    if isinstance(edit, tuple):
        cfg = yaml.safe_load(config_text)
        block, key, value = edit
        cfg[system].setdefault(block, {})[key] = value
        smoke.write_text(yaml.safe_dump(cfg))
    else:
        code = finished / "src" / "neurotrain" / edit
        code_before = (code.read_bytes(), code.stat().st_mtime)
        code.write_bytes(code_before[0] + (b"\n{# edited #}\n" if code.suffix == ".j2" else b"\n# edited\n"))
    moved = []
    try:
        for rel in _job_outputs(system, stage):  # what Snakemake leaves after killing the job
            (backup / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(finished / rel, backup / rel)
            moved.append(rel)
        out = smk(finished, "-n").stdout
    finally:
        for rel in moved:
            shutil.move(backup / rel, finished / rel)
        smoke.write_text(config_text)
        if code is not None:
            code.write_bytes(code_before[0])
            os.utime(code, (code_before[1], code_before[1]))
    assert "Nothing to be done" not in out
    after = {st for st in INPUTS_FROM if st in STAGE_RULE and stage in INPUTS_FROM[st]} | {"aggregate"}
    todo = list(after - {"aggregate"})
    while todo:
        st = todo.pop()
        for nxt in (x for x in INPUTS_FROM if x in STAGE_RULE and st in INPUTS_FROM[x]):
            if nxt not in after:
                after.add(nxt)
                todo.append(nxt)
    want = {STAGE_RULE[st] for st in after | {stage}}
    if system == "cpc_snn" and "train_model" in want:
        want = (want - {"train_model"}) | {"train_model_jax"}
    planned = set(re.findall(rf"^(?:local)?rule (\w+):\n(?:    .*\n)*?    wildcards: system={system}\b.*\n", out, re.M))
    assert want <= planned, (want - planned, planned)


def test_extraction_only_key_reruns_extraction_not_training(finished):
    """lisbet.training.embed_batch is read by extraction alone: changing it reruns extraction
    and what follows it, never training."""
    smoke = (finished / "config" / "smoke.yaml").read_text()
    cfg = yaml.safe_load(smoke)
    cfg["lisbet"].setdefault("training", {})["embed_batch"] = 7
    (finished / "config" / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    try:
        jobs = planned_jobs(finished)
    finally:
        (finished / "config" / "smoke.yaml").write_text(smoke)
    assert jobs == {"extract_model": 1, "analyze_population": 1, "render_figures": 1, "render_report": 1,
                    "aggregate_run": 1, "index_report": 1, "all": 1}


def test_template_change_reruns_only_report(finished):
    # src is a link to the repository: edit a private copy of the package instead.
    _private_src(finished)
    tpl = finished / "src" / "neurotrain" / "systems" / "ei_rnn" / "report.md.j2"
    with _edited(tpl):
        jobs = planned_jobs(finished)
    assert jobs == {"render_report": 1, "aggregate_run": 1, "index_report": 1, "all": 1}


def test_analysis_change_reruns_analysis_figures_report(finished):
    _private_src(finished)
    mod = finished / "src" / "neurotrain" / "systems" / "ei_rnn" / "analyze.py"
    with _edited(mod):
        jobs = planned_jobs(finished)
    assert jobs == {"analyze_population": 1, "render_figures": 1, "render_report": 1, "aggregate_run": 1,
                    "index_report": 1, "all": 1}


def test_training_param_change_reruns_from_training(finished):
    smoke = (finished / "config" / "smoke.yaml").read_text()
    (finished / "config" / "smoke.yaml").write_text(smoke.replace("max_epochs: 4", "max_epochs: 5", 1))  # ei_rnn only
    try:
        jobs = planned_jobs(finished)
    finally:
        (finished / "config" / "smoke.yaml").write_text(smoke)
    assert jobs == {"train_model": 1, "extract_model": 1, "analyze_population": 1, "render_figures": 1,
                    "render_report": 1, "aggregate_run": 1, "index_report": 1, "all": 1}
    assert planned_jobs(finished) == {} or "train_model" not in planned_jobs(finished)


def _private_src(wd: Path):
    import shutil

    src = wd / "src"
    if src.is_symlink():
        target = src.resolve()
        src.unlink()
        shutil.copytree(target, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        # keep mtimes so only the edited file differs
        for p in src.rglob("*"):
            q = target / p.relative_to(src)
            if q.exists():
                import os
                st = q.stat()
                os.utime(p, (st.st_atime, st.st_mtime))


def test_workstation_profile_applies_to_a_bare_snakemake(tmp_path):
    """profiles/default beside the Snakefile is applied to a bare `snakemake`: its
    printshellcmds prints every job's command in a dry run, and its rerun-incomplete reruns an
    output that a killed Snakemake left marked incomplete instead of stopping with
    IncompleteFilesException; without the profile, neither."""
    import base64

    wd = workflow_copy(tmp_path)
    out = wd / "data" / "processed" / "ei_rnn.h5"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"half-written")
    marker = wd / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(b"data/processed/ei_rnn.h5").decode()
    marker.parent.mkdir(parents=True)
    marker.touch()

    def dry(*extra):
        r = subprocess.run(["snakemake", "-n", "--configfile", "config/smoke.yaml", *extra], cwd=wd,
                           capture_output=True, text=True, env=snakemake_env(), timeout=300)
        return r.returncode, r.stdout + r.stderr

    code, text = dry()
    assert code == 0, text[-2000:]
    assert "Using workflow specific profile profiles/default" in text
    assert "python -m neurotrain.runner preprocess --system ei_rnn" in text  # printshellcmds
    assert re.search(r"rule preprocess_dataset:(\n    .*)*\n    output: data/processed/ei_rnn.h5", text)
    code, text = dry("--workflow-profile", "none")
    assert code != 0 and "IncompleteFilesException" in text
    assert "python -m neurotrain.runner" not in text


def test_gpu_model_only_for_jobs_that_ask_for_gpus(tmp_path):
    """cluster.gpu_model with GPUs for one system: only that system's training asks SLURM for
    them (--gpus=a100:1); the others ask for none, not for --gpus=a100:0."""
    wd = workflow_copy(tmp_path)
    (wd / "config" / "gpu.yaml").write_text("cluster:\n  train_gpus: {cebra: 1}\n  gpu_model: a100\n")
    r = subprocess.run(["snakemake", "-n", "--configfile", "config/smoke.yaml", "config/gpu.yaml"], cwd=wd,
                       capture_output=True, text=True, env=snakemake_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = re.findall(r"^rule (train_model\w*):\n(?:    .*\n)*?    wildcards: system=(\w+).*\n(?:    priority: .*\n)?    resources: (.*)$",
                      r.stdout, re.M)
    assert {system for _, system, _ in jobs} == set(SMOKE_SYSTEMS)
    for _, system, res in jobs:
        want = "gpu=1, gpu_model=a100" if system == "cebra" else "gpu=0, gpu_model=,"
        assert want in res, (system, res)


def test_every_shell_substitution_is_quoted(root):
    """Nothing from the config or a wildcard reaches a rule's shell unquoted: every placeholder
    of every shell command is shell-quoted (``:q``); ``params.truth`` is quoted by its helper."""
    blocks = 0
    for f in sorted((root / "workflow" / "rules").glob("*.smk")):
        for block in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", f.read_text()):
            blocks += 1
            for ph in re.findall(r"\{([^{}]+)\}", block):
                assert ph.endswith(":q") or ph == "params.truth", f"{f.name}: {{{ph}}} is not quoted"
    assert blocks == 11  # one per rule that runs a shell command


def test_a_killed_snakemake_leaves_no_lock_in_the_way(tmp_path):
    """`make run` after a killed Snakemake: the lock it left is removed (neurotrain.workflow_lock)
    when no Snakemake runs in the folder, and a real one running there is named in one line."""
    import signal
    import sys
    import time

    wd = workflow_copy(tmp_path)
    run = subprocess.Popen(["snakemake", f"{seed_dir('cpc_snn')}/model/model_best.npz", "--cores", "1", "--configfile",
                            "config/smoke.yaml"], cwd=wd, env=snakemake_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    locks = wd / ".snakemake" / "locks"
    for _ in range(600):
        if locks.is_dir() and any(locks.iterdir()):
            break
        time.sleep(0.1)
    unlock = [sys.executable, "-m", "neurotrain.workflow_lock", "--configfile", "config/smoke.yaml"]
    live = subprocess.run(unlock, cwd=wd, capture_output=True, text=True, env=snakemake_env())
    assert live.returncode == 1 and f"another Snakemake (pid {run.pid})" in live.stderr, live.stderr
    assert any(locks.iterdir())
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake and its job, as a time limit or a closed laptop would
    run.wait()
    cheap = ["snakemake", "data/processed/cpc_snn.h5", "--forceall", "--cores", "1", "--configfile", "config/smoke.yaml"]
    stuck = subprocess.run(cheap, cwd=wd, capture_output=True, text=True, env=snakemake_env())
    assert stuck.returncode != 0 and "LockException" in stuck.stdout + stuck.stderr
    freed = subprocess.run(unlock, cwd=wd, capture_output=True, text=True, env=snakemake_env())
    assert freed.returncode == 0 and "removed the lock" in freed.stderr, freed.stderr
    again = subprocess.run(cheap, cwd=wd, capture_output=True, text=True, env=snakemake_env())
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]


def test_unknown_config_key_rejected(tmp_path):
    wd = workflow_copy(tmp_path)
    (wd / "config" / "bad.yaml").write_text("ei_rnn:\n  training:\n    max_epoch: 3\n")
    r = subprocess.run(["snakemake", "-n", "--configfile", "config/bad.yaml"], cwd=wd, capture_output=True,
                       text=True, env=snakemake_env())
    assert r.returncode != 0
    assert "max_epoch" in r.stdout + r.stderr
    assert not (wd / "results").exists()


def test_lint_and_format(root):
    r = subprocess.run(["snakemake", "--lint", "--cores", "1"], cwd=root, capture_output=True, text=True, env=snakemake_env())
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, r.stdout + r.stderr
    r = subprocess.run(["snakefmt", "--check", "Snakefile", "workflow/rules"], cwd=root, capture_output=True, text=True,
                       env=snakemake_env())
    assert r.returncode == 0, r.stdout + r.stderr


def _user_mat_workflow(tmp_path, spikes_nan=False):
    from neurotrain.matlab import write_mat

    wd = workflow_copy(tmp_path)
    rng = np.random.default_rng(0)
    spikes = rng.poisson(1.0, size=(12, 10, 6)).astype(float)
    if spikes_nan:
        spikes[0, 0, 0] = np.nan
    write_mat(wd / "my_export.mat", {"spikes": spikes, "inputs": rng.normal(size=(12, 10, 2)),
                                     "conditions": np.repeat([1, 2, 3], 4).reshape(-1, 1).astype(float),
                                     "ei_labels": np.array([[0], [0], [0], [0], [1], [1]], float),
                                     "dt": np.array([[0.025]])}, "v7.3")
    (wd / "config" / "user.yaml").write_text("ei_rnn:\n  data:\n    source: mat\n    path: my_export.mat\n")
    return subprocess.run(["snakemake", "--cores", "1", "data/processed/ei_rnn.h5", "--configfile",
                           "config/smoke.yaml", "config/user.yaml"], cwd=wd, capture_output=True, text=True, env=snakemake_env()), wd


def test_user_mat_file_through_snakemake(tmp_path):
    r, wd = _user_mat_workflow(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    import h5py

    with h5py.File(wd / "data" / "processed" / "ei_rnn.h5") as fh:
        assert fh["spikes"].shape == (12, 10, 6)
    assert not (wd / "data" / "raw").exists(), "a user's file must not trigger the generator"


def test_bad_user_file_stops_workflow_without_output(tmp_path):
    r, wd = _user_mat_workflow(tmp_path, spikes_nan=True)
    assert r.returncode != 0
    log = (wd / "results" / "logs" / "ei_rnn" / "preprocess_dataset.log").read_text()  # data rules: per system
    assert "my_export.mat" in log and "NaN/Inf" in log and "Traceback" not in log
    assert not (wd / "data" / "processed" / "ei_rnn.h5").exists()


@pytest.mark.parametrize("data,needle", [
    ("    source: mat\n", "ei_rnn.data.path"),
    ("    source: mat\n    path: exports/absent.mat\n", "exports/absent.mat"),
])
def test_user_file_config_errors_are_named(tmp_path, data, needle):
    wd = workflow_copy(tmp_path)
    (wd / "config" / "user.yaml").write_text("ei_rnn:\n  data:\n" + data)
    r = subprocess.run(["snakemake", "-n", "--configfile", "config/smoke.yaml", "config/user.yaml"], cwd=wd,
                       capture_output=True, text=True, env=snakemake_env())
    assert r.returncode != 0 and needle in r.stdout + r.stderr


def test_cli_analysis_bad_window_keeps_earlier_results(finished):
    from conftest import NEUROTRAIN

    run = finished / seed_dir("ei_rnn")
    before = (run / "metrics.json").read_bytes()
    r = subprocess.run([NEUROTRAIN, "analyze", "--system", "ei_rnn", "--params", '{"analysis": {"fano_window_bins": 99}}',
                        "--run-dir", seed_dir("ei_rnn"), "--data", "data/processed/ei_rnn.h5"],
                       cwd=finished, capture_output=True, text=True)
    assert r.returncode == 2 and "ei_rnn.analysis.fano_window_bins" in r.stderr and "Traceback" not in r.stderr
    assert (run / "metrics.json").read_bytes() == before


def test_cebra_contract_files(finished):
    run = finished / seed_dir("cebra")
    assert (run / "export" / "cebra_model.pt").is_file()  # loads with cebra.CEBRA.load (test_cebra checks it)
    m = json.loads((run / "metrics.json").read_text())
    names = json.loads((run / "outputs" / "sessions.json").read_text())["names"]
    assert names == ["session0", "session1", "session2"] and m["n_neurons"] == [10, 12, 14]
    S = len(names)
    assert np.load(run / "metrics" / "consistency.npy").shape == (S, S)
    for f in ("decoding_r2", "decoding_median_abs_error", "raw_decoding_r2", "reconstruction_r2"):
        assert np.load(run / "metrics" / f"{f}.npy").shape == (S,), f
    for n, N in zip(names, m["n_neurons"]):
        emb = np.load(run / "outputs" / f"embedding_{n}.npy")
        split = np.load(run / "outputs" / f"split_{n}.npy")
        assert emb.shape == (400, 3) and split.shape == (400,) and (split == 1).sum() == 80
        assert (split == -1).sum() == 10  # cebra.data.split_gap between the training and held-out parts
        assert np.load(run / "outputs" / f"latent_{n}.npy").shape == (400, 2)
        assert np.load(run / "metrics" / f"fano_{n}.npy").shape == (N,)
        assert np.load(run / "metrics" / f"decoded_{n}.npy").shape == (80, 1)
        assert np.load(run / "population" / f"pca_{n}.npy").shape == (400, 3)
        assert (run / "weights" / f"session{names.index(n)}_{n}").is_dir()
    log = json.loads((run / "model" / "training_log.json").read_text())
    assert len(log["history"]["total"]) == 6
    for f in ("embeddings", "loss", "consistency", "decoding", "fano_factors"):
        assert (run / "figures" / f"{f}.png").read_bytes()[:4] == b"\x89PNG", f
    report = (run / "training_report.md").read_text()
    assert "# CEBRA Multi-Session Training Report" in report and "consistency" in report
    assert f"{m['consistency_mean']:.3f}" in report


def test_ring_attractor_contract_files(finished):
    run = finished / seed_dir("ring_attractor")
    m = json.loads((run / "metrics.json").read_text())
    E, I = 48, 12
    N, T, n_test = E + I, 20, 3
    shapes = {"weights/connectivity.npy": (N, N), "weights/W_EE.npy": (E, E), "weights/W_rot.npy": (E, E),
              "weights/W_EI.npy": (I, E), "weights/W_IE.npy": (E, I), "weights/preferred.npy": (E,),
              "outputs/test_rates.npy": (n_test, T, N), "outputs/test_decoded.npy": (n_test, T),
              "outputs/test_decoded_init.npy": (n_test, T), "outputs/test_theta.npy": (n_test, T),
              "outputs/drift_decoded.npy": (4, 10 + 15), "metrics/tracking_error_deg.npy": (n_test, T),
              "metrics/drift_deg_per_s.npy": (4,), "metrics/bump_profile.npy": (E,), "metrics/fano.npy": (N,),
              "population/pca.npy": (n_test, T, 3), "population/pca_components.npy": (3, N)}
    for rel, shape in shapes.items():
        assert np.load(run / rel, allow_pickle=False).shape == shape, rel
    w = np.load(run / "weights" / "W_IE.npy")
    assert w.max() <= 0.5 and m["constraint_violations"] == 0
    log = json.loads((run / "model" / "training_log.json").read_text())
    assert [r["epoch"] for r in log["history"]] == [1, 2, 3, 4]
    assert all({"g_ee", "noise_rate_e", "grad_norm", "learning_rate"} <= set(r) for r in log["history"])
    for f in ("training_curves", "learning_rate", "gradient_norms", "parameter_evolution", "connectivity",
              "bump_over_time", "decoded_vs_true", "pca_ring", "drift", "fano_factors"):
        assert (run / "figures" / f"{f}.png").read_bytes()[:4] == b"\x89PNG", f
    report = (run / "training_report.md").read_text()
    assert "# Ring Attractor Training Report" in report
    assert f"{m['tracking_error_median_deg']:.2f}" in report and f"{m['drift_mean_deg_per_s']:.3f}" in report
    # every bar beside the untrained network's value and the margin
    names = [b["name"] for b in m["quality"]["bars"]]
    assert names == ["median tracking error in darkness", "integration gain (decoded / true angular velocity, darkness)",
                     "bump drift without input", "parameters outside their biological ranges"]
    for b in m["quality"]["bars"][:3]:
        assert f"| {b['name']} | {b['reference']:.3f} (untrained network) | {b['trained']:.3f}" in report, b


def test_lisbet_contract_files(finished):
    run = finished / seed_dir("lisbet")
    # LISBET's layout (test_lisbet loads it with lisbet's own loader)
    assert len(list((run / "export" / "models").glob("lisbet*-embedded-embedder/weights/weights_last.pt"))) == 1
    m = json.loads((run / "metrics.json").read_text())
    meta = json.loads((run / "outputs" / "sequences.json").read_text())
    assert len(meta["names"]) == 8 and meta["behaviors"] == ["attack", "investigation", "mount", "other"]
    for n in meta["names"]:
        assert np.load(run / "outputs" / f"embedding_{n}.npy").shape == (120, 8)
        assert np.load(run / "outputs" / f"annotations_{n}.npy").shape == (120,)
        assert np.load(run / "population" / f"pca_{n}.npy").shape == (120, 3)
    for kind in ("embedding", "raw"):
        assert np.load(run / "metrics" / f"confusion_{kind}.npy").shape == (4, 4)
    cfg = json.loads((run / "weights" / "embedder" / "model_config.json").read_text())
    assert cfg["emb_dim"] == 8 and (run / "weights" / "embedder" / "weights.pt").is_file()
    assert (run / "model" / "lisbet8x1-embedded" / "weights" / "weights_last.pt").is_file()  # lisbet<emb>x<layers>-<source>
    log = json.loads((run / "model" / "training_log.json").read_text())
    assert len(log["history"]) == 3 and all(f"val_{t}_accuracy" in log["history"][0] for t in ("nwp", "smp", "dmp", "vsp"))
    for f in ("history", "embedding_pca", "confusion", "ethogram"):
        assert (run / "figures" / f"{f}.png").read_bytes()[:4] == b"\x89PNG", f
    report = (run / "training_report.md").read_text()
    assert "# LISBET Self-Supervised Training Report" in report and f"{m['macro_f1_raw']:.3f}" in report


def test_cpc_snn_contract_files(finished):
    run = finished / seed_dir("cpc_snn")
    m = json.loads((run / "metrics.json").read_text())["metrics"]
    n = m["n_test"]
    assert n == 60 and m["n_test_noise"] + m["n_test_chirps"] == n  # 0.25 of 240 segments
    assert np.load(run / "outputs" / "scores.npy").shape == (n,)
    for layer, units in enumerate([32, 32, 16, 8]):
        assert np.load(run / "outputs" / f"spike_counts_layer{layer}.npy").shape == (n, units)
        assert np.load(run / "outputs" / f"raster_layer{layer}.npy").shape[::2] == (2, units)
        assert np.load(run / "metrics" / f"fano_layer{layer}.npy").shape == (units,)
    assert np.load(run / "outputs" / "latents.npy").shape[::2] == (n, 16)
    assert np.load(run / "metrics" / "roc_snn.npy").shape == (n + 1, 2)
    assert np.load(run / "metrics" / "mf_scores.npy").shape == (n,)
    assert np.load(run / "weights" / "snn.layers.0.w.npy").shape == (1, 32, 32)  # [delay taps, bridge units, hidden]
    assert np.load(run / "weights" / "encoder.conv.0.w.npy").shape == (32, 1, 8)  # config.yaml's first kernel, smoke channels
    assert 0.5 <= m["auc_mf"] <= 1 and m["bank"]["n_templates"] == 8
    for f in ("phase1", "phase2", "phase3"):
        assert (run / "model" / "checkpoints" / f"{f}.npz").is_file()
    for f in ("loss_per_phase", "roc", "efficiency_vs_snr", "spike_raster", "latent_pca"):
        assert (run / "figures" / f"{f}.png").read_bytes()[:4] == b"\x89PNG", f
    report = (run / "training_report.md").read_text()
    assert "# CPC + SNN Gravitational-Wave Detector Report" in report
    assert f"{m['quality_bar']['tpr_mf']:.3f}" in report
    # InfoNCE's chance level: smoke micro-batch 8 + the other frames of the segment
    chance = m["cpc_chance"]
    assert chance["candidates"] == 8 + np.load(run / "outputs" / "latents.npy").shape[1] - 1
    assert chance["loss"] == pytest.approx(np.log(chance["candidates"]))
    assert f"ln {chance['candidates']} = {chance['loss']:.3f}" in report
    # the export: readable parameter names, and load_detector gives the same detection statistic
    from neurotrain.systems.cpc_snn.data import load_processed
    from neurotrain.systems.cpc_snn.network import load_detector

    with np.load(run / "export" / "detector.npz") as z:
        assert "encoder/conv/0/w" in z.files and "snn/readout/w" in z.files and not any("[" in k for k in z.files)
    det, params, config = load_detector(run / "export")
    d = load_processed(finished / "data" / "processed" / "cpc_snn.h5")
    x = d["strain"][np.load(run / "outputs" / "test_index.npy")]
    assert config["data"]["segment_samples"] == x.shape[1]
    logits = np.asarray(det.forward(params, x)[0])
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], np.load(run / "outputs" / "scores.npy"), atol=1e-4)


def test_cpc_snn_training_change_reruns_only_its_chain(finished):
    before = planned_jobs(finished)  # other tests may have left edits of their own pending
    smoke = (finished / "config" / "smoke.yaml").read_text()
    (finished / "config" / "smoke.yaml").write_text(smoke.replace("steps_per_epoch: 3\n      warmup_steps: 1\n    phase3",
                                                                  "steps_per_epoch: 4\n      warmup_steps: 1\n    phase3"))
    try:
        jobs = planned_jobs(finished)
    finally:
        (finished / "config" / "smoke.yaml").write_text(smoke)
    added = {k: v - before.get(k, 0) for k, v in jobs.items() if v != before.get(k, 0)}
    chain = {"train_model_jax": 1, "extract_model": 1, "analyze_population": 1, "render_figures": 1, "render_report": 1,
             "aggregate_run": 1}
    # the index report and `all` are planned once, whether or not another edit already planned them
    assert {k: v for k, v in added.items() if k not in ("index_report", "all")} == chain
    assert jobs.get("index_report") == 1


def test_one_system_target_builds_only_that_chain(tmp_path):
    wd = workflow_copy(tmp_path)
    r = subprocess.run(["snakemake", "-n", "results/cebra/default/run_report.md", "--configfile", "config/smoke.yaml"],
                       cwd=wd, capture_output=True, text=True, env=snakemake_env())
    assert r.returncode == 0, r.stdout + r.stderr
    wildcards = set(re.findall(r"wildcards: system=(\w+)", r.stdout))
    assert wildcards == {"cebra"}


def test_every_report_snippet_runs_as_written_from_another_folder(finished, tmp_path):
    """Each report's Python code blocks, copied as they are and run by a fresh interpreter whose
    working folder is not the workflow's: every one finishes without an error."""
    import re
    import subprocess
    import sys

    ran = []
    for report in sorted((finished / "results").glob("*/default/seed*/training_report.md")):
        blocks = re.findall(r"```python\n(.*?)```", report.read_text(), flags=re.S)
        for i, code in enumerate(blocks):
            system = report.parents[2].name
            script = tmp_path / f"{system}_{i}.py"
            script.write_text(code)
            r = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"{system} snippet {i}:\n{r.stderr[-2000:]}"
            ran.append(system)
    assert sorted(set(ran)) == ["cebra", "cpc_snn", "ei_rnn", "lisbet", "ring_attractor"], ran


def test_project_report_indexes_every_system(finished):
    text = (finished / "results" / "report.md").read_text()
    for system in ("ei_rnn", "cebra", "ring_attractor", "lisbet", "cpc_snn"):
        assert f"(`{system}`)" in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all((finished / "results" / link).is_file() for link in links), links
    figures = {p.relative_to(finished / "results").as_posix()
               for p in (finished / "results").glob("*/default/seed*/figures/*.png")}
    assert figures <= set(links)
    # every row of a system's table: metric | value | bar | reference | verdict
    assert "| SNN true-positive rate at FAP 0.05 |" in text and "noise ceiling" in text


def _chromium() -> str:
    import os
    import shutil

    exe = shutil.which("chromium")
    if exe is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["timeout", "-k", "10", "900", "apt-get", "install", "-y", "-q", "chromium"],
                       capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Debian's chromium is not installed and cannot be")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return exe


def test_snakemake_html_report_shows_every_figure(finished, tmp_path):
    """`snakemake --report`: opened in headless Chromium, the report's menu lists one category
    per system, every figure under it and the system's verdict table, each figure opened from
    the menu displays, and the table page holds the verdict and the headline metrics."""
    from markupsafe import escape as html_escape  # what Jinja autoescaping writes

    from neurotrain.reports.index import run_entry

    chromium = _chromium()
    smk(finished, "--report", "results/report.html")
    html = (finished / "results" / "report.html").read_text()
    js = (Path(__file__).parent / "report" / "check_report.js").read_text()
    page = tmp_path / "check.html"
    i = html.rfind("</body>")
    page.write_text(html[:i] + "<script>" + js + "</script>" + html[i:])
    r = subprocess.run(["timeout", "-k", "5", "180", chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=600000", "--dump-dom",
                        page.as_uri()], capture_output=True, text=True)
    m = re.search(r'neurotrain check result: ([A-Za-z0-9+/=]+)', r.stderr)
    assert m, f"the report did not load in Chromium:\n{r.stderr[-3000:]}"
    import base64

    found = json.loads(base64.b64decode(m.group(1)).decode("utf-8"))
    assert found["errors"] == []
    systems = ["ei_rnn", "cebra", "ring_attractor", "lisbet", "cpc_snn"]
    assert sorted(found["categories"]) == sorted(systems)
    for system in systems:
        pngs = sorted(p.relative_to(finished).as_posix()
                      for p in (finished / "results" / system / "default").glob("**/figures/*.png"))
        table = f"results/summaries/{system}.html"
        assert pngs and sorted(found["categories"][system]) == sorted([*pngs, table]), system
        for f in pngs:
            shown = found["shown"][f]
            assert isinstance(shown, list) and len(shown) == 1 and shown[0] and min(shown[0]) > 100, (f, shown)
        # the verdict and every headline metric, as a table beside the figures
        page = found["shown"][table]["html"]
        assert page and "<table>" in page and "Verdict: <b" in page, (system, page)
        entry = run_entry(system, "default", finished / "results")  # what the project report shows
        assert ("quality bar met" in page) == (entry["passes"] is True), system
        assert page.count("<tr><td>") == len(entry["rows"]) >= 2, system
        for r in entry["rows"]:
            assert f"<tr><td>{html_escape(r['metric'])}</td><td>{html_escape(r['value'])}</td>" in page, (system, r)
    # captions come from each system's spec.py (workflow/report/figure.rst shows them), one per figure
    assert "No caption for" not in html and html.count("Report: <tt") >= sum(len(v) for v in found["categories"].values())


def _digests(wd: Path) -> dict[str, str]:
    """sha256 of every array under results/ (every .npy at any depth, every saved model's
    tensors and arrays) and of every metrics.json with its timing fields removed."""
    import hashlib

    from conftest import model_digests, strip_timings

    out = {}
    res = wd / "results"
    for f in sorted(res.rglob("*.npy")):
        out[f.relative_to(res).as_posix()] = hashlib.sha256(np.load(f, allow_pickle=False).tobytes()).hexdigest()
    for f in sorted(list(res.rglob("model_*.pt")) + list(res.rglob("model_*.npz")) + list(res.rglob("*/model/**/*.pt"))):
        for k, v in model_digests(f).items():
            out[f"{f.relative_to(res).as_posix()}:{k}"] = v
    for f in sorted(res.rglob("metrics.json")):
        text = json.dumps(strip_timings(json.loads(f.read_text())), sort_keys=True)
        out[f.relative_to(res).as_posix()] = hashlib.sha256(text.encode()).hexdigest()
    return out


def test_two_smoke_runs_are_byte_identical(finished, tmp_path):
    """Determinism: a second smoke run from scratch gives the same bytes in every array (weights,
    outputs, metrics, population, the saved models) and the same metrics. ei_rnn and cpc_snn are
    compared with a clean run, stage by stage, in test_resume's every-stage chain."""
    systems = ("cebra", "ring_attractor", "lisbet")
    first = {k: v for k, v in _digests(finished).items() if k.split("/")[0] in systems}
    wd = workflow_copy(tmp_path)
    (wd / "config" / "three.yaml").write_text(f"systems: [{', '.join(systems)}]\n")
    smk(wd, "config/three.yaml")  # another --configfile
    second = _digests(wd)
    assert len(first) > 60 and first.keys() == second.keys()
    differ = sorted(k for k in first if first[k] != second[k])
    assert not differ, differ[:10]


def test_project_report_on_real_data_without_ground_truth(finished, tmp_path):
    """Real data has no true latent, no teacher rates and maybe no behaviour labels: the pooled
    run report and the index leave those rows out and read "n/a" for a bar they cannot score,
    instead of failing."""
    import shutil

    from neurotrain.reports.aggregate import aggregate_run
    from neurotrain.reports.index import render_index

    res = tmp_path / "results"
    shutil.copytree(finished / "results", res, ignore=shutil.ignore_patterns("*.html"))
    systems = ["ei_rnn", "cebra", "ring_attractor", "lisbet", "cpc_snn"]
    for system, drop in (("ei_rnn", ["mean_correlation_with_true_rates"]),
                         ("cebra", ["reconstruction_r2", "reconstruction_r2_min", "raw_reconstruction_r2"]),
                         ("lisbet", ["macro_f1_embedding", "macro_f1_raw"])):
        path = tmp_path / seed_dir(system) / "metrics.json"
        m = json.loads(path.read_text())
        for k in drop:
            m.pop(k)
        if system == "cebra":
            m["quality"] = {k: v for k, v in m["quality"].items() if "reconstruction" not in k}
            m["quality"]["bars"] = m["quality"]["bars"][:1]
        if system == "lisbet":
            m["quality"] = {"passes": None, "note": "no behaviour annotations: classifiers not scored"}
        path.write_text(json.dumps(m))
    for system in systems:
        aggregate_run(system, "default", [str(tmp_path / seed_dir(system))], res / system / "default")
    text = render_index([f"{s}/default" for s in systems], res, tmp_path / "report.md").read_text()
    assert "true latent" not in text and "teacher's true rates" not in text
    assert "| LISBET social-behaviour transformer (`lisbet`) | `default` | 1234 | n/a |" in text
    assert "of 4 scored runs" in text
    lisbet = (res / "lisbet" / "default" / "run_report.md").read_text()
    assert "not scored on this data" in lisbet


def _apply_inputs(wd: Path) -> dict:
    """New input files for every system, in the formats users bring, and the config naming them."""
    import scipy.io
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.behavior import CompassDirection

    from _gwosc import gwosc_file

    new = wd / "new"
    new.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(3, 20, 4))  # the smoke teacher's 4 input channels
    np.save(new / "conditions.npy", u.astype(np.float32))
    scipy.io.savemat(new / "conditions.mat", {"stim": u})
    np.save(new / "omega.npy", 3.0 * np.sin(np.arange(300) * 0.03))
    t = np.arange(600) * 0.025  # a 40 Hz head-direction recording
    nwb = NWBFile(session_description="hd", identifier="hd", session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    cd = CompassDirection(name="CompassDirection")
    cd.create_spatial_series(name="head_direction", data=np.mod(1.2 * np.sin(0.7 * t) + 0.5 * t, 2 * np.pi),
                             reference_frame="arena", unit="radians", timestamps=t)
    nwb.create_processing_module("behavior", "behaviour").add(cd)
    with NWBHDF5IO(str(new / "hd.nwb"), "w") as io_:
        io_.write(nwb)
    np.savez(new / "session_b.npz", spikes=rng.poisson(2.0, (300, 12)).astype(np.float32),
             behavior=rng.uniform(0, 1, (300, 1)).astype(np.float32))
    np.save(new / "thirteen.npy", rng.poisson(2.0, (300, 13)).astype(np.float32))
    kp = ["nose", "left_ear", "right_ear", "neck", "left_hip", "right_hip", "tail"]
    T = 150
    seq = {"keypoints": rng.uniform(0, 1000, (T, 2, 2, 7)).tolist(), "scores": np.ones((T, 2, 7)).tolist(),
           "annotations": rng.integers(0, 4, T).tolist(),
           "metadata": {"vocab": {"attack": 0, "investigation": 1, "mount": 2, "other": 3}}}
    (new / "calms21_test.json").write_text(json.dumps({"annotator-id_0": {"task1/test/mouse070": seq}}))
    pos = rng.uniform(0, 1, (T, 2, len(kp), 2))
    import xarray as xr

    ds = xr.Dataset({"position": (("time", "space", "keypoints", "individuals"), pos),
                     "confidence": (("time", "keypoints", "individuals"), np.ones((T, len(kp), 2)))},
                    coords={"time": np.arange(T) / 30.0, "space": ["x", "y"], "keypoints": kp,
                            "individuals": ["resident", "intruder"]},
                    attrs={"fps": 30.0, "time_unit": "seconds", "ds_type": "poses", "source_software": "SLEAP"})
    ds.to_netcdf(new / "pair.nc")
    gwosc_file(new / "H-H1_GWOSC_4KHZ_R1-1126300000-40.hdf5", seconds=40.0, gps=1126300000.0, chirp_at=20.0,
               chirp_snr=25.0)
    return {
        "ei_rnn": {"apply": {"inputs": {"npy": "new/conditions.npy", "mat": "new/conditions.mat"}, "variable": "stim"}},
        "ring_attractor": {"apply": {"inputs": {"trace": "new/omega.npy", "recording": "new/hd.nwb"}}},
        "cebra": {"apply": {"inputs": {"b": "new/session_b.npz", "thirteen": "new/thirteen.npy"}}},
        "lisbet": {"apply": {"inputs": {"mice": ["new/pair.nc", "new/calms21_test.json"]}, "motifs": 3,
                             "motif_pcs": 3}},
        "cpc_snn": {"apply": {"inputs": {"scan": "new/H-H1_GWOSC_4KHZ_R1-1126300000-40.hdf5"}, "fap": 0.1}},
    }


def test_apply_each_system_to_new_files_through_snakemake(finished):
    """`snakemake results/<system>/<run>/seed<k>/apply/<name>` runs the trained model on new files without
    retraining (only apply jobs run), for every system and input format; a file the model
    cannot take is refused in one line naming it, and leaves no folder."""
    import shutil

    wd = finished
    smk(wd)  # up to date first: earlier tests of this module edit and restore files of the finished run
    (wd / "apply.yaml").write_text(yaml.safe_dump(_apply_inputs(wd)))
    S = {s: seed_dir(s).removeprefix("results/") for s in ("ei_rnn", "ring_attractor", "cebra", "lisbet", "cpc_snn")}
    good = [f"results/{S[s]}/apply/{n}" for s, n in (("ei_rnn", "npy"), ("ei_rnn", "mat"), ("ring_attractor", "trace"),
                                                      ("ring_attractor", "recording"), ("cebra", "b"),
                                                      ("lisbet", "mice"), ("cpc_snn", "scan"))]
    run = lambda *targets: subprocess.run(  # noqa: E731
        ["snakemake", "--cores", "2", *targets, "--configfile", "config/smoke.yaml", "apply.yaml"], cwd=wd,
        capture_output=True, text=True, env=snakemake_env(), timeout=900)
    try:
        plan = run("-n", *good)
        assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
        jobs = re.findall(r"^(\w+)\s+(\d+)\s*$", plan.stdout.split("Job stats:")[1].split("total")[0], re.M)
        assert dict(jobs) == {"apply_model": "7"}, jobs  # nothing retrains
        r = run(*good)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        res = wd / "results"
        rates = np.load(res / S["ei_rnn"] / "apply/npy/rates.npy")
        assert rates.shape == (3, 20, 12) and np.isfinite(rates).all() and (rates >= 0).all()
        np.testing.assert_allclose(np.load(res / S["ei_rnn"] / "apply/mat/rates.npy"), rates, rtol=1e-6)
        for name, steps in (("trace", 300), ("recording", None)):
            folder = res / S["ring_attractor"] / "apply" / name
            dec, err = np.load(folder / "decoded.npy"), np.load(folder / "error_deg.npy")
            assert len(dec) == len(err) == (steps or len(dec)) and np.isfinite(dec).all()
            assert (folder / "decoded.png").read_bytes()[:4] == b"\x89PNG"
        info = json.loads((res / S["ring_attractor"] / "apply/recording/apply.json").read_text())
        assert info["kind"] == "nwb" and info["median_error_deg_in_darkness"] is not None
        b = json.loads((res / S["cebra"] / "apply/b/apply.json").read_text())
        assert b["session"] == "session1" and np.load(res / S["cebra"] / "apply/b/embedding.npy").shape == (300, 3)
        assert np.load(res / S["cebra"] / "apply/b/decoded.npy").shape == (300, 1) and "decoding" in b
        m = json.loads((res / S["lisbet"] / "apply/mice/apply.json").read_text())
        recs = {x["recording"]: x for x in m["recordings"]}
        assert set(recs) == {"pair", "task1-test-mouse070"}
        assert "macro_f1" in recs["task1-test-mouse070"] and "motif_ami" in recs["task1-test-mouse070"]
        for rec in recs:
            z = np.load(res / S["lisbet"] / "apply/mice" / rec / "embedding.npy")
            assert z.shape == (150, 8) and np.load(res / S["lisbet"] / "apply/mice" / rec / "motifs.npy").max() < 3
        scan = json.loads((res / S["cpc_snn"] / "apply/scan/apply.json").read_text())
        gps, mf = np.load(res / S["cpc_snn"] / "apply/scan/gps_start.npy"), np.load(res / S["cpc_snn"] / "apply/scan/mf_snr.npy")
        assert len(gps) == scan["windows"] == len(np.load(res / S["cpc_snn"] / "apply/scan/statistic.npy"))
        assert scan["thresholds_set_on"]["split"] == "validation" and scan["thresholds_set_on"]["noise_segments"] >= 10
        assert all(0.0 <= scan["fap_on_test_noise"][k] <= 1.0 for k in ("snn", "matched_filter"))
        loudest = gps[np.argmax(mf)]
        assert loudest <= 1126300020.0 <= loudest + 1.0, "the matched filter peaks on the window holding the chirp"
        triggers = (res / S["cpc_snn"] / "apply/scan/triggers.tsv").read_text().splitlines()
        assert triggers[0].split("\t")[:3] == ["detector", "gps_peak", "gps_start"]
        assert any(line.startswith("matched_filter\t") and abs(float(line.split("\t")[1]) - 1126300020.0) < 1.5
                   for line in triggers[1:]), triggers
        # a session with neurons no encoder was trained on: one line naming it, no folder
        bad = run(f"results/{S['cebra']}/apply/thirteen")
        assert bad.returncode != 0 and not (res / S["cebra"] / "apply/thirteen").exists()
        log = (wd / log_dir("cebra") / "apply_thirteen.log").read_text().strip().splitlines()
        assert log[-1].startswith("error: new/thirteen.npy: has 13 neurons; the model's encoders take session0 "
                                  "(10 neurons), session1 (12 neurons), session2 (14 neurons)"), log[-1]
    finally:
        for system in ("ei_rnn", "ring_attractor", "cebra", "lisbet", "cpc_snn"):
            shutil.rmtree(wd / seed_dir(system) / "apply", ignore_errors=True)


@pytest.mark.parametrize("system, make, line", [
    ("ei_rnn", lambda p: np.save(p / "u.npy", np.zeros((2, 10, 3))),
     "error: new/u.npy: inputs have shape (2, 10, 3); the model takes [conditions, time, 4] (4 input channels, as in "
     "its training data)"),
    ("ring_attractor", lambda p: np.save(p / "u.npy", np.full(50, np.nan)), "error: new/u.npy: holds 50 NaN/Inf values"),
    ("cebra", lambda p: np.savez(p / "u.npz", rates=np.zeros((5, 12))),
     "error: new/u.npz: has no array 'spikes' (it has rates)"),
    ("lisbet", lambda p: (p / "u.json").write_text('{"annotator-id_0": {"s1": {"keypoints": [[[[1, 2]]]]}}}'),
     None),
    ("cpc_snn", lambda p: (p / "u.hdf5").write_bytes(b"not hdf5"), None),
])
def test_apply_refuses_input_the_model_cannot_take(finished, tmp_path, system, make, line):
    """`neurotrain apply` with a file that does not fit: exit 2, one line naming the file, no output folder."""
    new = finished / "new"
    new.mkdir(exist_ok=True)
    make(new)
    f = next(p for p in new.glob("u.*"))
    try:
        r = subprocess.run(["neurotrain", "apply", "--system", system, "--config", "config/smoke.yaml", "--run-dir",
                            seed_dir(system), "--data", f"data/processed/{system}.h5", "--inputs",
                            f"new/{f.name}", "--out-dir", f"{seed_dir(system)}/apply/bad"], cwd=finished,
                           capture_output=True, text=True, env=snakemake_env(), timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) >= 1, r.stderr
        assert lines[-1].startswith(f"error: new/{f.name}: ") and all(not x.startswith("Traceback") for x in lines)
        if line is not None:
            assert lines[-1] == line
        assert not (finished / seed_dir(system) / "apply" / "bad").exists()
    finally:
        f.unlink()
