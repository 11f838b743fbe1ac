"""Configuration: YAML loading, validation against the JSON schema, defaults, stage slices.

The schema is assembled from ``schemas/config.schema.yaml`` (the top level: ``systems``,
``cluster``) and one block per registered system, ``systems/<name>/schema.yaml``; it is the
single place where defaults live. The Snakefile validates the user's config with
:func:`validate` (filling every default) and hands each stage exactly the keys its spec declares
(:func:`slice_block`); the stage runner wraps that slice in a :class:`StrictConfig`, so a stage
that reads a key it did not declare stops with an error naming the stage and the key, instead
of silently getting a default. ``docs/configuration.md`` is generated from the same schema
(:func:`reference_markdown`).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from neurotrain.errors import NeurotrainError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"
# the schemas are the project's own files: read with libyaml's safe loader where PyYAML has it
# (every Snakefile load and every stage reads them; the pure-Python loader took 0.5 s)
_SCHEMA_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    from neurotrain import registry

    schema = yaml.load(SCHEMA_PATH.read_text(), Loader=_SCHEMA_LOADER)  # noqa: S506 - a safe loader
    systems = registry.names()
    props = schema["properties"]
    props["systems"]["items"]["enum"] = systems
    props["runs"]["items"]["properties"]["system"]["enum"] = systems
    props["cluster"]["properties"]["train_gpus"]["propertyNames"] = {"enum": systems}
    for name in systems:
        props[name] = yaml.load((registry.SYSTEMS_DIR / name / "schema.yaml").read_text(), Loader=_SCHEMA_LOADER)  # noqa: S506
    return schema


def load_schema() -> dict:
    """The whole config schema: the top level and every registered system's block."""
    return copy.deepcopy(_schema())


def _defaulting_validator():
    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _key_of(error: jsonschema.ValidationError, prefix: str = "") -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        parts += extra[:1]
    key = ".".join(([prefix] if prefix else []) + parts)
    return key or "<config>"


def _refuse_non_finite(node, key: str) -> None:
    """JSON schema's ``number`` admits NaN and infinities (YAML ``.nan``, ``.inf``); no key of
    this workflow means them."""
    if isinstance(node, float) and not math.isfinite(node):
        raise NeurotrainError(f"config key {key or '<config>'}", f"{node} is not a finite number")
    if isinstance(node, dict):
        for k, v in node.items():
            _refuse_non_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _refuse_non_finite(v, f"{key}.{i}")


def validate(config: dict, schema: dict | None = None, prefix: str = "") -> dict:
    """Validate ``config`` in place (filling defaults) and return it.

    Raises :class:`NeurotrainError` naming the offending key for unknown keys, wrong types and
    out-of-range values.
    """
    schema = schema if schema is not None else load_schema()
    _refuse_non_finite(config, prefix)
    validator = _defaulting_validator()(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = _key_of(err, prefix)
        if err.validator == "additionalProperties":
            msg = "unknown key (not in the schema)"
        else:
            msg = err.message
        raise NeurotrainError(f"config key {key}", msg)
    return config


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last
    one silently, so a second ``ei_rnn:`` block would replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: str | Path) -> dict:
    """The mapping in a YAML config file, read strictly: UTF-8 text, safe tags only, no key
    given twice. Raises NeurotrainError naming the file (and the line of a repeated key)."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NeurotrainError(path, f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise NeurotrainError(path, f"cannot read it ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as exc:
        if exc.problem and "given twice" in exc.problem:
            raise NeurotrainError(path, f"{exc.problem} (line {exc.problem_mark.line + 1})") from None
        raise NeurotrainError(path, f"not valid YAML ({exc.__class__.__name__})") from None
    except yaml.YAMLError as exc:
        raise NeurotrainError(path, f"not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise NeurotrainError(path, "a config must be a mapping of keys")
    return data


def load_config(path: str | Path | list | tuple | None) -> dict:
    """Read a YAML config (:func:`read_config_file`), validate it and fill every default. Several
    files merge in order, each key of a later one replacing the earlier's, as Snakemake merges
    ``--configfile a.yaml b.yaml``."""
    if path is None:
        return validate({})
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    from neurotrain.runs import merge

    data: dict = {}
    for p in paths:
        data = merge(data, read_config_file(p))
    path = " + ".join(map(str, paths))
    try:
        validate(data)
        from neurotrain.runs import run_sheet

        run_sheet(data)  # the run sheet's overrides against each system's schema
        return data
    except NeurotrainError as exc:
        raise NeurotrainError(f"{path}: {exc.where}", exc.what) from None


def known_systems(schema: dict | None = None) -> list[str]:
    """The systems the schema defines (the enum of ``systems``)."""
    schema = schema if schema is not None else load_schema()
    return list(schema["properties"]["systems"]["items"]["enum"])


def validate_system(system: str, block: dict) -> dict:
    """Validate one system's config block in place (filling defaults) and return it."""
    schema = _schema()
    if system not in known_systems(schema):
        raise NeurotrainError(f"system {system!r}", f"unknown system (known: {', '.join(known_systems(schema))})")
    return validate(block, schema["properties"][system], prefix=system)


def system_defaults(system: str) -> dict:
    """The config block of ``system`` with every schema default."""
    return validate_system(system, {})


# --------------------------------------------------------------------------- stage slices
_MISSING = object()


def slice_block(block: dict, reads: tuple[str, ...] | list[str]) -> dict:
    """The part of a validated system block that a stage declares it reads (dotted keys)."""
    out: dict = {}
    for dotted in reads:
        keys = dotted.split(".")
        value: Any = block
        for k in keys:
            value = value.get(k, _MISSING) if isinstance(value, dict) else _MISSING
            if value is _MISSING:
                break
        if value is _MISSING:
            continue
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = copy.deepcopy(value)
    return out


def _declared_tree(reads) -> dict:
    """``{"training": {"seed": True}, "model": True}``: True marks a whole declared subtree."""
    tree: dict = {}
    for dotted in reads:
        node = tree
        keys = dotted.split(".")
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is True:
                break
            node = node.setdefault(k, {})
        else:
            node[keys[-1]] = True
    return tree


class UndeclaredConfigKey(Exception):
    """A stage read a config key that its system's spec does not declare for it (a bug in the
    spec or the stage, not in the user's config). Not a KeyError, so that no ``except KeyError``
    and no template engine can turn it into a silent default."""

    def __init__(self, stage: str, key: str):
        self.stage, self.key = stage, key
        super().__init__(f"stage {stage} reads config key {key}, which it does not declare "
                         f"(add it to the stage's `reads` in the system's spec.py)")

    def __str__(self) -> str:
        return self.args[0]


class StrictConfig(dict):
    """A stage's config slice: a ``dict`` that raises :class:`UndeclaredConfigKey` for any key
    outside the stage's declared ``reads`` (``cfg["x"]``, ``cfg.get("x")``, ``"x" in cfg`` of an
    undeclared key), so no stage can fall back on a default the user did not see it use.
    Sub-blocks are StrictConfig too; a wholly declared block is a plain dict."""

    def __init__(self, data: dict, declared: dict, stage: str, prefix: str):
        super().__init__()
        self._declared, self._stage, self._prefix = declared, stage, prefix
        for k, v in data.items():
            sub = declared.get(k)
            if sub is None:
                continue
            if sub is not True and isinstance(v, dict):
                v = StrictConfig(v, sub, stage, f"{prefix}.{k}")
            dict.__setitem__(self, k, v)

    def _check(self, key) -> None:
        if key not in self._declared:
            raise UndeclaredConfigKey(self._stage, f"{self._prefix}.{key}")

    def __getitem__(self, key):
        self._check(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self._check(key)
        return dict.get(self, key, default)

    def __contains__(self, key) -> bool:
        self._check(key)
        return dict.__contains__(self, key)

    def __deepcopy__(self, memo):
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self):
        return dict, (dict(self),)


def stage_config(system: str, stage: str, config_path: str | Path | None = None,
                 params_json: str | None = None, reads: list[str] | None = None,
                 run: str | None = None, seed: int | None = None) -> StrictConfig:
    """The strict config slice of one stage of ``system``.

    A rule passes the slice as JSON (``params_json``; the Snakefile validated the whole config
    and cut it with :func:`slice_block`); a user at the shell passes ``--config FILE``. Either
    way the block is validated (defaults filled), cut to the stage's declared keys and wrapped
    in a :class:`StrictConfig`. ``reads`` are the stage's declared keys (default: from its spec).
    With a config file, ``run`` picks a run of its run sheet (:mod:`neurotrain.runs`; its
    overrides apply) and ``seed`` the replicate (default: the run's first seed).
    """
    if reads is None:
        from neurotrain import registry

        reads = registry.spec(system).stages[stage].reads
    if params_json is not None:
        try:
            block = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise NeurotrainError("--params", f"not valid JSON: {exc}") from None
        if not isinstance(block, dict):
            raise NeurotrainError("--params", "must be a JSON object (the system's config block)")
        block = validate_system(system, block)
    else:
        config = load_config(config_path)
        block = config[system]
        if run is not None or seed is not None:
            from neurotrain import runs

            if run is None:  # a seed of the system's block as it is
                try:
                    block = validate_system(system, runs.merge(block, {"training": {"seed": int(seed)}}))
                except NeurotrainError as exc:
                    raise NeurotrainError("--seed", exc.what) from None
            else:
                r = runs.find(runs.run_sheet(config), system, run)
                block = r.config(r.seeds[0] if seed is None else seed)
    return StrictConfig(slice_block(block, reads), _declared_tree(reads), stage=f"{system}.{stage}", prefix=system)


# --------------------------------------------------------------------------- reference
def _type_of(node: dict) -> str:
    t = node.get("type", "")
    t = " or ".join(t) if isinstance(t, list) else t
    if "enum" in node:
        t = " | ".join(f"`{v}`" for v in node["enum"])
    elif node.get("type") == "array" and isinstance(node.get("items"), dict) and "enum" in node["items"]:
        t = "list of " + " | ".join(f"`{v}`" for v in node["items"]["enum"])
    bounds = [f"{op} {node[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                                                ("exclusiveMaximum", "<")) if k in node]
    return ", ".join([t] + bounds) if bounds else t


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _rows(node: dict, prefix: str, out: list[str]) -> None:
    for name, sub in node.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        if sub.get("type") == "object" and "properties" in sub:
            _rows(sub, key, out)
            continue
        default = json.dumps(sub["default"]) if "default" in sub else "(required)"
        out.append(f"| `{key}` | {_cell(_type_of(sub))} | `{_cell(default)}` | {_cell(sub.get('description', ''))} |")
        items = sub.get("items") if sub.get("type") == "array" else None
        if isinstance(items, dict) and "properties" in items:  # a table's columns (the run sheet)
            _rows(items, f"{key}[]", out)


def reference_markdown() -> str:
    """``docs/configuration.md``: every config key with its type, default and meaning, generated
    from the assembled schema (``make docs`` writes it; a test fails when they differ)."""
    from neurotrain import registry

    schema = _schema()
    lines = ["# Configuration reference", "",
             "Generated from the schema by `make docs` (`python -m neurotrain.config`); do not edit by hand.",
             "The top level is `src/neurotrain/schemas/config.schema.yaml`; each system's block is",
             "`src/neurotrain/systems/<name>/schema.yaml`. Unknown keys and wrong types are refused with the",
             "key's name, by Snakemake (`workflow/rules/common.smk`) and by the `neurotrain` CLI alike.", ""]
    top = {k: v for k, v in schema["properties"].items() if k not in registry.names()}
    lines += ["## Top level", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    _rows({"properties": top}, "", lines)
    for name in registry.names():
        spec = registry.spec(name)
        block = schema["properties"][name]
        lines += ["", f"## `{name}`: {spec.title}", "", _cell(block.get("description", "")), "",
                  "Stages and the keys each reads (a change reruns that stage and what follows it):", ""]
        for stage, st in spec.stages.items():
            reads = ", ".join(f"`{name}.{r}`" for r in st.reads) or "none"
            lines.append(f"- {stage}: {reads}")
        lines += ["", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        _rows(block, name, lines)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(reference_markdown())
