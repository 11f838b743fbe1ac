"""The one stage runner: ``python -m neurotrain.runner <stage> --system NAME ...`` is what every
Snakemake rule runs, and ``neurotrain <stage> ...`` is the same command for a user at the shell.

For a system's stage the runner validates the config, cuts the stage's strict slice
(:func:`neurotrain.config.stage_config`), sets up the outputs and calls the entry function the
system's spec names. ``fetch`` (one download) and ``index`` (the project report) belong to no
system. User errors print one line, ``error: <file or key>: <what>``, and exit with status 2;
a diverged training exits 3, a signal 128+n.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from typing import Callable

from neurotrain.errors import Interrupted, NeurotrainError


def _raw(p):
    p.add_argument("--raw", required=True, nargs="+", help="raw dataset: file(s), or the folder `generate` wrote")
    p.add_argument("--out", required=True, help="processed HDF5 to write, e.g. data/processed/ei_rnn.h5")


def _generate(p):
    p.add_argument("--out-dir", required=True, help="folder to create, e.g. data/raw/ei_rnn/embedded")


def _train(p):
    p.add_argument("--data", required=True, help="processed HDF5")
    p.add_argument("--out-dir", required=True, help="model folder, e.g. results/ei_rnn/default/seed42/model")


def _extract(p):
    p.add_argument("--model-dir", required=True, help="folder with model_best.pt / .npz")
    p.add_argument("--data", required=True, help="processed HDF5")
    p.add_argument("--out-dir", required=True, help="run folder: weights/ and outputs/ are written in it")


def _analyze(p):
    p.add_argument("--run-dir", required=True, help="run folder with weights/ and outputs/")
    p.add_argument("--data", required=True, help="processed HDF5")
    p.add_argument("--truth", default=None, help="ground truth of an embedded dataset (optional)")


def _figures(p):
    p.add_argument("--run-dir", required=True, help="run folder with model/, metrics/, ...")


def _report(p):
    p.add_argument("--run-dir", required=True, help="run folder")
    p.add_argument("--out", default=None, help="report path (default <run-dir>/training_report.md)")


def _apply(p):
    p.add_argument("--run-dir", required=True, help="the trained replicate's folder, e.g. results/cebra/default/seed42")
    p.add_argument("--data", required=True, help="the processed HDF5 the model was trained on")
    p.add_argument("--inputs", required=True, nargs="+", help="new input file(s) to apply the model to")
    p.add_argument("--out-dir", required=True, help="folder to create, e.g. results/cebra/default/seed42/apply/<input name>")


def _call(stage: str, fn: Callable, cfg, args, files: list[str]):
    if stage == "generate":
        from neurotrain.io import atomic_dir

        with atomic_dir(args.out_dir) as tmp:
            return fn(cfg, tmp)
    if stage == "preprocess":
        seen = {}
        for r in args.raw:  # one recording given twice would count every sample twice
            real = os.path.realpath(r)
            if real in seen:
                raise NeurotrainError(r, f"given twice (also as {seen[real]}); list each raw file once")
            seen[real] = r
        if args.config:  # a user at the shell; the rules pass the config's own files as --raw
            _say_raw_overrides(args.system, cfg, args.raw)
        return fn(cfg, args.raw, args.out)
    if stage == "train":
        from neurotrain.training.threads import training_threads

        return fn(cfg, args.data, args.out_dir, training_threads(cfg))
    if stage == "extract":  # weights/ and outputs/ replace the earlier ones together, or not at all
        from neurotrain.io import staged

        with staged(args.out_dir) as tmp:
            (tmp / "export").mkdir()  # the trained model in its field's format, where a system writes one
            return fn(cfg, args.model_dir, args.data, str(tmp))
    if stage == "analyze":
        return fn(cfg, args.run_dir, args.data, args.truth)
    if stage == "figures":
        return fn(cfg, args.run_dir)
    if stage == "report":
        return fn(args.system, cfg, args.run_dir, args.out, files[0])
    if stage == "apply":  # the folder appears whole, or not at all (an earlier one stays)
        from neurotrain.io import atomic_dir

        if len(args.inputs) > 1 and not _several_files_per_input(args.system):
            raise NeurotrainError(", ".join(args.inputs), f"give one file per name (config key "
                                                          f"{args.system}.apply.inputs names one file each)")
        for f in args.inputs:
            if not os.path.exists(f):
                raise NeurotrainError(f, "input file not found")
        with atomic_dir(args.out_dir) as tmp:
            return fn(cfg, args.run_dir, args.data, args.inputs, tmp)
    raise AssertionError(stage)


def _several_files_per_input(system: str) -> bool:
    """Whether the system's schema lets one name of ``apply.inputs`` hold a list of files
    (LISBET: the recordings of one cage); the others name one file each."""
    from neurotrain.config import load_schema

    value = load_schema()["properties"][system]["properties"]["apply"]["properties"]["inputs"]["additionalProperties"]
    return any(v.get("type") == "array" for v in value.get("anyOf", [value]))


def _say_raw_overrides(system: str, cfg, raw: list[str]) -> None:
    """Log that ``--raw`` replaces the files a config key of the active source lists (e.g.
    ``cpc_snn.data.gwosc.paths``), when they differ: the command reads ``--raw`` only."""
    from neurotrain import registry

    data = cfg["data"]
    source = registry.spec(system).sources.get(data["source"])
    if source is None or not source.user_files:
        return
    value = data
    for k in source.user_files:
        value = value.get(k) if hasattr(value, "get") else None
    listed = [value] if isinstance(value, str) else list(value or [])
    if listed and sorted(map(os.path.realpath, listed)) != sorted(map(os.path.realpath, raw)):
        key = ".".join((system, "data", *source.user_files))
        logging.getLogger("neurotrain").warning(
            "reading the --raw file(s) %s, not config key %s (%s)", " ".join(raw), key, " ".join(listed))


SYSTEM_STAGES: dict[str, tuple[str, Callable]] = {
    "generate": ("write a system's embedded dataset and its ground truth into a folder", _generate),
    "preprocess": ("check a raw dataset and write the system's standard HDF5 layout", _raw),
    "train": ("train a system on its processed dataset, resuming from an interrupted run", _train),
    "extract": ("weights and model outputs as .npy, and the model exported in its field's format", _extract),
    "analyze": ("per-neuron metrics, PCA, Fano factors and the system's scores", _analyze),
    "figures": ("render the system's matplotlib PNGs into <run-dir>/figures", _figures),
    "report": ("render <run-dir>/training_report.md from the system's Jinja template", _report),
    "apply": ("apply the trained model to new input files, without retraining", _apply),
}
# Stages of no system, imported by name so that no system stage's code inputs include them.
SHARED_STAGES = {"fetch": "neurotrain.fetch:download", "index": "neurotrain.reports.index:render_index",
                 "aggregate": "neurotrain.reports.aggregate:aggregate_run"}
STAGES = (*SYSTEM_STAGES, *SHARED_STAGES)


def _shared(stage: str) -> Callable:
    module, func = SHARED_STAGES[stage].split(":")
    return getattr(importlib.import_module(module), func)


def guarded(fn: Callable[[], object]) -> int:
    """Run ``fn``; user errors (NeurotrainError, a file or folder it may not read or write) print
    one line and return 2 (3: diverged, 128+n: signal n)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("neurotrain").setLevel(logging.INFO)  # ours at INFO; other libraries' chatter only from WARNING
    try:
        fn()
    except NeurotrainError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, whatever a library wrote
        return 2
    except FloatingPointError as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 130
    except PermissionError as exc:  # a file or folder the user may not read or write, wherever it is opened
        where = exc.filename if exc.filename is not None else "a file"
        print(f"error: {where}: {exc.strerror or 'permission denied'} (check its permissions and its "
              f"folder's; nothing was written)", file=sys.stderr)
        return 2
    return 0


def _version() -> str:
    """``neurotrain <version> (python ..., torch ..., ...)``, read from the installed metadata
    (nothing heavy is imported)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from neurotrain import __version__

    libs = []
    for name in ("torch", "cebra", "jax", "optax", "snakemake", "numpy"):
        try:
            libs.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            libs.append(f"{name} not installed")
    return f"neurotrain {__version__} (python {platform.python_version()}, {', '.join(libs)})"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurotrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version(),
                   help="neurotrain's version and those of the libraries that decide its numbers")
    sub = p.add_subparsers(dest="stage", required=True, metavar="stage")
    for stage, (doc, add_args) in SYSTEM_STAGES.items():
        sp = sub.add_parser(stage, help=doc, description=f"Stage {stage}: {doc}.")
        sp.add_argument("--system", required=True, help="system name, e.g. ei_rnn")
        src = sp.add_mutually_exclusive_group()
        src.add_argument("--config", nargs="+", help="YAML config file(s), merged in order as Snakemake's --configfile "
                                                      "merges them (the system's block is used; defaults filled)")
        src.add_argument("--params", help="the stage's config slice as JSON (what the Snakemake rules pass)")
        sp.add_argument("--run", help="with --config: a run of the config's run sheet (its overrides apply)")
        sp.add_argument("--seed", type=int, help="with --config: the training seed (a replicate; default: the "
                                                 "run's first seed, or the block's training.seed)")
        sp.add_argument("--stage-spec", help="JSON {entry, reads, files} from the system's spec (what the rules pass, so "
                                             "that the stage does not import the spec; default: read the spec)")
        add_args(sp)
    f = sub.add_parser("fetch", help="download one file of a real dataset, checksum verified, retried, cached, "
                                     "written atomically",
                       description="Download one file (http or https), md5 or sha256 verified, retried, kept in a "
                                   "cache folder, written atomically. Not tied to a system: the workflow passes "
                                   "each file's address and checksum.")
    f.add_argument("--url", required=True, help="address of the file (http or https)")
    f.add_argument("--hash", "--md5", dest="hash", required=True,
                   help="expected checksum: md5:<hex>, sha256:<hex>, or a plain md5 (hex)")
    f.add_argument("--retries", type=int, default=3, help="attempts in all (default 3)")
    f.add_argument("--cache", default="", help="cache folder, e.g. data/cache: a file there with the right checksum "
                                               "is not downloaded again (default: no cache)")
    f.add_argument("--out", required=True, help="where to write it, e.g. data/raw/cebra/download/achilles.jl.gz")
    g = sub.add_parser("aggregate", help="pool a run's seeds: results/<system>/<run>/aggregate.json and run_report.md")
    g.add_argument("--system", required=True, help="system name, e.g. ei_rnn")
    g.add_argument("--run", required=True, help="the run's name, e.g. default")
    g.add_argument("--seed-dirs", required=True, nargs="+", help="the replicate folders, e.g. "
                                                                "results/ei_rnn/default/seed42 results/ei_rnn/default/seed43")
    g.add_argument("--out-dir", required=True, help="the run's folder, e.g. results/ei_rnn/default")
    g.add_argument("--overrides", default="{}", help="the run's overrides of its system's config block, as JSON "
                                                     "(shown in the pooled report)")
    i = sub.add_parser("index", help="render the project report results/report.md over the finished runs")
    i.add_argument("--runs", required=True, help="comma-separated <system>/<run>, in report order")
    i.add_argument("--results", default="results", help="results folder (results/<system>/<run>/ per run)")
    i.add_argument("--out", default="results/report.md")
    i.add_argument("--summaries", default=None, help="folder for one HTML verdict table per system "
                                                     "(default <results>/summaries; shown by snakemake --report)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        code = _main(args)
    finally:
        _record_imports(args)
    if code == 0:
        print(f"peak memory: {peak_rss_mb():.0f} MB (max RSS of this stage)", file=sys.stderr)
    return code


def peak_rss_mb() -> float:
    """The largest resident set this process or any child it waited for reached, in MB (the
    kernel's exact maximum, ``getrusage``; Snakemake's ``benchmark:`` files sample it every
    0.5 s or more and miss short peaks). Each rule's log ends with it."""
    import resource

    kb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return kb / 1024.0  # Linux reports kilobytes


def _main(args) -> int:
    if args.stage == "fetch":
        return guarded(lambda: _shared("fetch")(args.url, args.out, args.hash, retries=args.retries,
                                                cache=args.cache or None))
    if args.stage == "index":
        return guarded(lambda: _shared("index")([s for s in args.runs.split(",") if s], args.results, args.out,
                                                args.summaries))
    if args.stage == "aggregate":
        def aggregate():
            try:
                overrides = json.loads(args.overrides)
            except json.JSONDecodeError as exc:
                raise NeurotrainError("--overrides", f"not valid JSON: {exc}") from None
            _shared("aggregate")(args.system, args.run, args.seed_dirs, args.out_dir,
                                 overrides)

        return guarded(aggregate)

    if args.stage == "figures":
        os.environ["MPLBACKEND"] = "Agg"  # files only, no window (before any figures module imports pyplot)

    def run():
        from neurotrain import registry
        from neurotrain.config import stage_config

        st = json.loads(args.stage_spec) if args.stage_spec else registry.stage_spec(args.system, args.stage)
        if (args.run is not None or args.seed is not None) and not args.config:
            raise NeurotrainError("--run/--seed", "need --config (the rules pass the replicate's own --params)")
        cfg = stage_config(args.system, args.stage, args.config, args.params, reads=st["reads"],
                           run=args.run, seed=args.seed)
        _limit_threads(args.stage, cfg, st)
        _call(args.stage, registry.load_entry(args.system, st["entry"]), cfg, args, st["files"])

    return guarded(run)


def _limit_threads(stage: str, cfg, stage_spec: dict) -> None:
    """A training job uses ``<system>.training.threads`` CPU threads, every other stage one, the
    same on any machine and under any ``--cores`` (neurotrain.training.threads); a stage that
    loads JAX (``stage_spec["jax"]``) starts its CPU client with that many threads."""
    from neurotrain.training.threads import limit_threads, training_threads

    limit_threads(training_threads(cfg) if stage == "train" else 1, jax_backend=bool(stage_spec.get("jax")))


def _record_imports(args) -> None:
    """With ``NEUROTRAIN_RECORD_IMPORTS=<folder>``, write the package source files this stage
    imported to ``<folder>/<system>.<stage>.json`` (``_.<stage>`` for fetch and index): the tests hold them against the stage's
    code inputs (the static import closure the rules list)."""
    folder = os.environ.get("NEUROTRAIN_RECORD_IMPORTS")
    if not folder:
        return
    from pathlib import Path

    files = sorted({m.__file__ for name, m in list(sys.modules.items())
                    if (name == "neurotrain" or name.startswith("neurotrain.")) and getattr(m, "__file__", None)})
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{getattr(args, 'system', None) or '_'}.{args.stage}.json").write_text(json.dumps(files, indent=1))


if __name__ == "__main__":
    sys.exit(main())
