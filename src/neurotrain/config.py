"""Configuration: YAML loading, validation against the JSON schema, defaults, system slices.

The schema (``workflow/schemas/config.schema.yaml``) is the single place where defaults live;
Snakemake validates the same file with ``validate()``. Modules run from the shell load a config
with :func:`load_config` (or take a system's slice as JSON from a rule) and get the same
defaults and the same errors.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import NeurotrainError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


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


def validate(config: dict, schema: dict | None = None, prefix: str = "") -> dict:
    """Validate ``config`` in place (filling defaults) and return it.

    Raises :class:`NeurotrainError` naming the offending key for unknown keys, wrong types and
    out-of-range values.
    """
    schema = schema if schema is not None else load_schema()
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


def load_config(path: str | Path | None) -> dict:
    """Read a YAML config (``yaml.safe_load``), validate it and fill every default."""
    if path is None:
        return validate({})
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise NeurotrainError(path, f"not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise NeurotrainError(path, "a config must be a mapping of keys")
    try:
        return validate(data)
    except NeurotrainError as exc:
        raise NeurotrainError(f"{path}: {exc.where}", exc.what) from None


def known_systems(schema: dict | None = None) -> list[str]:
    """The systems the schema defines (the enum of ``systems``)."""
    schema = schema if schema is not None else load_schema()
    return list(schema["properties"]["systems"]["items"]["enum"])


def system_slice(system: str, config_path: str | Path | None = None, params_json: str | None = None) -> dict:
    """The validated config block of one system, from a config file or from a JSON slice.

    A rule passes its ``params`` slice as JSON; a user at the shell passes ``--config FILE``.
    Either way the slice is validated against the system's part of the schema.
    """
    schema = load_schema()
    if system not in known_systems(schema):
        raise NeurotrainError(f"system {system!r}", "unknown system")
    if params_json is not None:
        try:
            block = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise NeurotrainError("--params", f"not valid JSON: {exc}") from None
        return validate(block, schema["properties"][system], prefix=system)
    return load_config(config_path)[system]


def validate_system(system: str, block: dict) -> dict:
    """Validate one system's config block in place (filling defaults) and return it."""
    schema = load_schema()
    if system not in known_systems(schema):
        raise NeurotrainError(f"system {system!r}", "unknown system")
    return validate(block, schema["properties"][system], prefix=system)


def system_defaults(system: str) -> dict:
    """The config block of ``system`` with every schema default."""
    return validate_system(system, {})
