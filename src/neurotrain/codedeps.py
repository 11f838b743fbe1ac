"""The code a stage runs: the import closure of a module inside the ``neurotrain`` package.

Found statically (``ast``, no import is executed, so the Snakefile stays free of torch and
JAX): every ``import``/``from ... import`` anywhere in a module, top level or inside a
function, that names a module of the package, followed transitively, plus the ``__init__.py``
of every package on the way (Python runs them on import). Imports through ``importlib`` (the
registry's lookup of a system's entry) are not followed: the workflow adds the entry module's
own closure. The Snakemake rules list these files (of the stage and of every earlier stage:
``registry.provenance_code``) as inputs, so editing any of them reruns the stage, and editing a
module outside them does not.
"""

from __future__ import annotations

import ast
import functools
import json
import os
from pathlib import Path

PACKAGE = "neurotrain"
# src/neurotrain as imported (not resolved: through a symlinked checkout the rules' code inputs
# keep the paths Snakemake was started with, so a copy or a moved link does not rerun everything)
ROOT = Path(__file__).absolute().parent


def module_file(module: str) -> Path | None:
    """The source file of a package module (``neurotrain.x.y``), or None if there is none."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    return _module_file(ROOT, module)


@functools.lru_cache(maxsize=None)
def _module_file(root: Path, module: str) -> Path | None:
    # looked up once per process: the closures of every stage ask for the same names thousands of times
    rel = Path(*module.split(".")[1:])
    for cand in (root / rel / "__init__.py", (root / rel).with_suffix(".py")):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    is_pkg = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_pkg else parts), is_pkg


# Import lists of files parsed in earlier processes (:func:`use_cache`): path -> [mtime_ns, size, imports]
_disk: dict[str, list] = {}
_disk_file: Path | None = None
_disk_dirty = False


def use_cache(path: str | Path) -> None:
    """Keep the files' import lists in ``path`` (JSON) between processes. Every ``snakemake`` call
    (and every cluster job, which reads the Snakefile again) asks for the closures of every stage;
    parsing the package's files for them was most of the Snakefile's own start-up time. An entry
    counts only while its file's modification time and size are unchanged; an unreadable cache
    is ignored (and rewritten)."""
    global _disk, _disk_file
    _disk_file = Path(path)
    try:
        loaded = json.loads(_disk_file.read_text())
        _disk = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        _disk = {}


def save_cache() -> None:
    """Write the cache of :func:`use_cache` if a file was parsed since it was read (atomically: a
    cluster job reading it meanwhile sees the old or the new file, whole)."""
    global _disk_dirty
    if _disk_file is None or not _disk_dirty:
        return
    try:  # not neurotrain.io.atomic_path: it imports numpy, which the Snakefile otherwise never loads
        _disk_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = _disk_file.with_name(f"{_disk_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_disk, sort_keys=True))
        os.replace(tmp, _disk_file)
        _disk_dirty = False
    except OSError:  # a read-only working directory: parse again next time
        pass


def _imports(path: Path) -> frozenset[str]:
    """Absolute names of every module ``path`` imports (and ``from x import y``: x and x.y).
    Each file is parsed once per process while it is unchanged (the Snakefile asks for the
    closures of every stage of every system, which share most of their files), and once in all
    while :func:`use_cache` keeps the results on disk."""
    global _disk_dirty
    st = path.stat()
    key = str(path)
    hit = _disk.get(key)
    if isinstance(hit, list) and len(hit) == 3 and hit[:2] == [st.st_mtime_ns, st.st_size]:
        return frozenset(hit[2])
    found = _parsed_imports(path, st.st_mtime_ns, st.st_size)
    if _disk_file is not None:
        _disk[key] = [st.st_mtime_ns, st.st_size, sorted(found)]
        _disk_dirty = True
    return found


@functools.lru_cache(maxsize=None)
def _parsed_imports(path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    name, is_pkg = _module_name(path)
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in _statements(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return frozenset(out)


def _statements(body: list[ast.stmt]):
    """Every statement in ``body`` and, depth first, in the statement blocks inside it (function
    and class bodies, branches, handlers, match cases): where an import can stand. Expressions
    are not entered (an import is a statement), which is most of a module's nodes."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                yield from _statements(block)
        for part in [*getattr(node, "handlers", ()), *getattr(node, "cases", ())]:
            yield from _statements(part.body)


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.lru_cache(maxsize=None)
def closure(module: str) -> tuple[Path, ...]:
    """Every package source file that importing ``module`` runs, sorted."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        for m in [mod, *_parents(mod)]:
            f = module_file(m)
            if f is None or f in seen:
                continue
            seen.add(f)
            todo.extend(_imports(f))
    return tuple(sorted(seen))
