"""Conda environments: pinned to the lock, and holding every package each rule's code imports."""

import ast
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "neurotrain"

# import name -> distribution name
DIST = {"yaml": "pyyaml", "sklearn": "scikit-learn", "jinja2": "jinja2", "h5py": "h5py", "numpy": "numpy",
        "scipy": "scipy", "torch": "torch", "matplotlib": "matplotlib", "jsonschema": "jsonschema",
        "tqdm": "tqdm", "pandas": "pandas", "jax": "jax", "optax": "optax", "cebra": "cebra", "pynwb": "pynwb",
        "joblib": "joblib"}


def _lock() -> dict:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[name.lower()] = version
    return out


def _env_packages(name: str) -> dict:
    env = yaml.safe_load((ROOT / "envs" / f"{name}.yaml").read_text())
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for p in dep["pip"]:
                n, v = p.split("==")
                pins[n.lower()] = v
    return pins


def _module_file(mod: str) -> Path | None:
    parts = mod.split(".")
    if parts[0] != "neurotrain":
        return None
    base = PKG.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def third_party_imports(module: str) -> set[str]:
    """Top-level third-party packages imported by ``module`` and the package modules it imports."""
    seen, todo, found = set(), [module], set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        f = _module_file(mod)
        if f is None:
            continue
        pkg = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                    names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
                else:
                    names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top == "neurotrain":
                    todo.append(n)
                elif top not in sys.stdlib_module_names:
                    found.add(top)
    return found


def _smk_literal(name: str):
    """A literal assigned in workflow/rules/common.smk (plain Python syntax)."""
    tree = ast.parse((ROOT / "workflow" / "rules" / "common.smk").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise KeyError(name)


def _rule_stages():
    return _smk_literal("STAGE_ENV")


def test_envs_pinned_to_lock():
    lock = _lock()
    for name in ("torch", "jax", "analysis"):
        for pkg, version in _env_packages(name).items():
            assert lock.get(pkg) == version, f"envs/{name}.yaml pins {pkg}=={version}, lock has {lock.get(pkg)}"


@pytest.mark.parametrize("system", ["ei_rnn", "cebra"])
def test_each_rule_env_holds_its_imports(system):
    from neurotrain.registry import SYSTEMS

    framework = SYSTEMS[system]["framework"]
    stage_env = _rule_stages()
    assert set(stage_env) == {"generate", "fetch", "preprocess", "train", "extract", "analyze", "figures", "report"}
    for stage, env in stage_env.items():
        env = env.format(framework=framework)
        mods = {f"neurotrain.stages.{stage}"}
        if stage in SYSTEMS[system]:
            mods.add(SYSTEMS[system][stage].split(":")[0])
        needed = set().union(*(third_party_imports(m) for m in mods))
        have = set(_env_packages(env))
        missing = {DIST.get(n, n) for n in needed} - have
        assert not missing, f"rule stage {stage} of {system} imports {missing}, absent from envs/{env}.yaml"


def test_import_scanner_sees_torch():
    assert "torch" in third_party_imports("neurotrain.systems.ei_rnn.train")
    assert "torch" not in third_party_imports("neurotrain.systems.ei_rnn.analyze")
