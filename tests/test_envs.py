"""Conda environments: pinned to the lock, and holding every package each rule's code imports."""

import ast
import sys
from pathlib import Path

import pytest
import yaml

from neurotrain import registry
from neurotrain.spec import OPTIONAL_STAGES, STAGES

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


def third_party_imports(files) -> set[str]:
    """Top-level third-party packages imported anywhere in ``files`` (package source files)."""
    found = set()
    for f in files:
        for node in ast.walk(ast.parse(Path(f).read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top != "neurotrain" and top not in sys.stdlib_module_names:
                    found.add(top)
    return found


def test_envs_pinned_to_lock():
    lock = _lock()
    for name in ("torch", "jax", "analysis"):
        for pkg, version in _env_packages(name).items():
            assert lock.get(pkg) == version, f"envs/{name}.yaml pins {pkg}=={version}, lock has {lock.get(pkg)}"


@pytest.mark.parametrize("system", registry.names())
def test_each_rule_env_holds_its_imports(system):
    """Every stage's conda env holds every third-party package of the stage's code inputs (the
    import closure the rule lists), so a rule never fails in its env on an import."""
    for stage in (*STAGES, *(s for s in OPTIONAL_STAGES if s in registry.spec(system).stages)):
        env = registry.stage_env(system, stage)
        needed = third_party_imports(p for p in registry.stage_code(system, stage) if p.suffix == ".py")
        missing = {DIST.get(n, n) for n in needed} - set(_env_packages(env))
        assert not missing, f"stage {stage} of {system} imports {missing}, absent from envs/{env}.yaml"


def test_import_scanner_sees_torch():
    assert "torch" in third_party_imports(registry.stage_code("ei_rnn", "train"))
    assert "torch" not in third_party_imports(registry.stage_code("ei_rnn", "analyze"))
    assert "jax" not in third_party_imports(registry.stage_code("ei_rnn", "train"))
