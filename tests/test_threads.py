"""A stage's CPU threads come from the config, not from the machine or Snakemake's allotment
(neurotrain.training.threads): training uses <system>.training.threads, every other stage one."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import BIN, NEUROTRAIN, ROOT, model_digests, snakemake_env

DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _python(code: str) -> dict:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_torch_uses_the_count_given():
    out = _python("""
        import json, torch
        from neurotrain.training.threads import limit_threads
        limit_threads(3)
        a = torch.get_num_threads()
        limit_threads(1)
        print(json.dumps([a, torch.get_num_threads()]))
    """)
    assert out == [3, 1]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and 2 CPUs")
def test_jax_pool_of_one_thread_and_every_thread_keeps_all_cpus():
    """XLA's CPU pool is started with one thread: a large jitted matmul keeps one CPU busy, not
    all (CPU time per wall second; load on the machine can only lower it); afterwards every thread
    of the process may run on every CPU again (nothing is pinned)."""
    out = _python("""
        import json, os, time
        from neurotrain.training.threads import limit_threads
        allowed = os.sched_getaffinity(0)
        limit_threads(1, jax_backend=True)
        import jax, jax.numpy as jnp
        x = jnp.ones((1500, 1500)); f = jax.jit(lambda a: a @ a); f(x).block_until_ready()
        c, w = time.process_time(), time.perf_counter()
        for _ in range(15):
            f(x).block_until_ready()
        ratio = (time.process_time() - c) / (time.perf_counter() - w)
        masks = {tid: sorted(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/self/task")}
        print(json.dumps({"ratio": ratio, "allowed": sorted(allowed), "masks": masks}))
    """)
    assert out["ratio"] < 1.3, out["ratio"]
    assert all(m == out["allowed"] for m in out["masks"].values()), out["masks"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux (taskset)")
def test_jax_on_fewer_cpus_than_its_threads_says_so():
    """XLA's pool cannot outgrow the CPUs the process may use, so a JAX job given fewer CPUs than
    training.threads computes with fewer threads (other numbers): the job warns."""
    r = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                        "from neurotrain.training.threads import limit_threads; limit_threads(2, jax_backend=True)"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "training.threads is 2 but this process may use 1 CPU(s)" in r.stderr, r.stderr


def test_runner_sets_training_threads_for_train_and_one_thread_for_other_stages():
    out = _python("""
        import json, torch
        from neurotrain.config import stage_config
        from neurotrain.runner import _limit_threads
        cfg = stage_config("ring_attractor", "train", params_json='{"training": {"threads": 3}}')
        _limit_threads("train", cfg, {"jax": False})
        a = torch.get_num_threads()
        _limit_threads("extract", stage_config("ring_attractor", "extract", params_json="{}"), {"jax": False})
        print(json.dumps([a, torch.get_num_threads()]))
    """)
    assert out == [3, 1]


def test_stage_spec_says_which_stages_start_jax():
    """The rules pass it (--stage-spec), so the runner need not import the system's spec."""
    from neurotrain import registry

    assert [registry.stage_spec("cpc_snn", s)["jax"] for s in ("train", "extract", "figures", "report")] == \
        [True, True, False, False]
    assert not any(registry.stage_spec("cebra", s)["jax"] for s in ("train", "extract", "analyze"))


def test_bad_thread_count_is_refused_with_its_key(tmp_path):
    (tmp_path / "c.yaml").write_text("ei_rnn:\n  training:\n    threads: 0\n")
    r = subprocess.run([NEUROTRAIN, "train", "--system", "ei_rnn", "--config", "c.yaml", "--data", "p.h5",
                        "--out-dir", "m"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "ei_rnn.training.threads" in r.stderr, r.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux (taskset)")
def test_weights_depend_on_training_threads_not_on_the_cpus_the_job_gets(tmp_path):
    """The E-I RNN at its default size, whose weights differ in their last digits between 1 and 2
    threads on an AVX2 EPYC (whether they do depends on the CPU's kernels): with training.threads
    2 the job gives the same weights on one CPU (taskset, as a Snakemake job given fewer cores)
    as on all, and threads 1 gives the same weights on every run."""
    block = copy.deepcopy(DEFAULT["ei_rnn"])
    block["training"].update(max_epochs=3, checkpoint_every=3, detail_every=1000)
    env = snakemake_env()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"ei_rnn": block}))
    for stage, args in (("generate", ["--out-dir", "raw"]), ("preprocess", ["--raw", "raw", "--out", "p.h5"])):
        r = subprocess.run([NEUROTRAIN, stage, "--system", "ei_rnn", "--config", "c.yaml", *args], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
    digests = {}
    for name, threads, prefix in (("two", 2, []), ("two_on_one_cpu", 2, ["taskset", "-c", "0"]), ("one", 1, []),
                                  ("one_on_one_cpu", 1, ["taskset", "-c", "1"])):
        b = copy.deepcopy(block)
        b["training"]["threads"] = threads
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"ei_rnn": b}))
        r = subprocess.run([*prefix, NEUROTRAIN, "train", "--system", "ei_rnn", "--config", f"{name}.yaml", "--data",
                            "p.h5", "--out-dir", name], cwd=tmp_path, capture_output=True, text=True, env=env,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        digests[name] = model_digests(tmp_path / name / "model_final.pt")
    assert digests["two"] == digests["two_on_one_cpu"]
    assert digests["one"] == digests["one_on_one_cpu"]
    # whether 1 and 2 threads differ (they do on an AVX2 EPYC: so the count is a config key) is
    # the CPU's kernels' business, not a promise of the workflow: not asserted


def test_training_rule_asks_snakemake_for_the_configured_threads(tmp_path):
    from conftest import workflow_copy

    wd = workflow_copy(tmp_path)
    (wd / "extra.yaml").write_text("systems: [ring_attractor]\nring_attractor:\n  training:\n    threads: 3\n")
    r = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "4", "results/ring_attractor/default/seed42/model/model_best.pt",
                        "--configfile", "config/smoke.yaml", "extra.yaml"],
                       cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job = r.stdout[r.stdout.index("rule train_model:"):].split("\n\n")[0]
    assert "threads: 3" in job, job
    # the longest chains start first: the job's priority is the system's train_minutes
    from neurotrain import registry

    assert f"priority: {registry.spec('ring_attractor').train_minutes}" in job, job
