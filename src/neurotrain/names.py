"""Names that become paths (download file names, run ids, ...): only plain names are accepted,
so that nothing from a config or a data file can run as a shell command or reach outside its
folder. Torch- and numpy-free (the Snakefile uses it through the systems' specs)."""

from __future__ import annotations

import re

from neurotrain.errors import NeurotrainError

PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # '+': DANDI's file names (behavior+ecephys)
RULE = "letters, digits, '.', '_', '+' and '-', starting with a letter or digit"


def plain_name(name: object, where: str, reserved: tuple[str, ...] = ()) -> str:
    """``name`` if it is a plain file name (``PLAIN``) and not one of ``reserved``; otherwise a
    NeurotrainError at ``where`` (a config key or a file)."""
    if not isinstance(name, str) or not PLAIN.fullmatch(name) or len(name) > 255:
        raise NeurotrainError(where, f"{name!r} is not a plain name ({RULE})")
    if name in reserved:
        raise NeurotrainError(where, f"{name!r} is taken by the workflow's own files ({', '.join(reserved)})")
    return name
