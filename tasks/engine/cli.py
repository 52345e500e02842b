"""``python -m tasks``: list what is installed, or run a preset through Hydra."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from tasks.engine import registry as _registry
from tasks.errors import RunInterrupted, UserError

FULL_ERROR_ENV = "LIGHTNING_TASKS_FULL_ERROR"

USAGE = """\
usage: python -m tasks +task=PRESET [group=option ...] [key=value ...]
       python -m tasks list [--problem TEXT] [--json]
       python -m tasks export RUN_DIR_OR_CKPT [--out DIR] [--name NAME] [--version N] [--onnx]
       python -m tasks serve BUNDLE [--host 127.0.0.1] [--port 8000] [--workers N]
       python -m tasks doctor +task=PRESET [key=value ...] [--strict] [--out DIR]
       python -m tasks --version

Train, test and save a preset's model; everything is a Hydra override, e.g.
  python -m tasks +task=breast_cancer_mlp trainer.max_epochs=5 trainer=gpu
  python -m tasks +task=breast_cancer_mlp mode=predict ckpt_path=RUN/checkpoints/best.ckpt \\
      datamodule.predict_path=new_rows.csv
  python -m tasks +task=breast_cancer_mlp debug=tiny        # a fast end-to-end check
  python -m tasks +task=breast_cancer_mlp --cfg job          # print the composed config
Groups: trainer (default, cpu, gpu, gpu_bf16, gpu_fp16, ddp, ddp_cpu), logger (csv,
tensorboard, mlflow, none), callbacks (default, none), debug (fdr, tiny), experiment.
"""


def _print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(title)
    if not rows:
        print("  (none)")
    width = max((len(r[0]) for r in rows), default=0)
    for name, detail, origin in rows:
        print(f"  {name:<{width}}  {detail}  [{origin}]")
    print()


def version_line() -> str:
    """``lightning-tasks X (python Y, torch Z, lightning W)`` from package metadata only."""
    import platform
    from importlib import metadata

    from tasks import __version__

    parts = [f"python {platform.python_version()}"]
    for dist in ("torch", "lightning"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return f"lightning-tasks {__version__} ({', '.join(parts)})"


def _list_options(args: list[str]) -> tuple[bool, str | None]:
    """``--json`` and ``--problem TEXT`` (or ``--problem=TEXT``) of ``list``."""
    from tasks.errors import ConfigError

    as_json, problem, rest = False, None, list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--json":
            as_json = True
        elif arg == "--problem" and rest:
            problem = rest.pop(0)
        elif arg.startswith("--problem="):
            problem = arg.partition("=")[2]
        else:
            raise ConfigError(
                f"list: unknown option {arg!r}; use: python -m tasks list [--problem TEXT] [--json]"
            )
    return as_json, problem


def _select_problem(presets: dict[str, dict[str, str]], problem: str) -> dict[str, Any]:
    """The presets whose task (problem) or name contains ``problem`` (case-insensitive)."""
    from tasks.errors import ConfigError

    text = problem.lower().replace("-", "_").replace(" ", "_")
    chosen = {n: p for n, p in presets.items() if text in p["task"].lower() or text in n.lower()}
    if not chosen:
        problems = sorted({p["task"] for p in presets.values() if p["task"]})
        raise ConfigError(
            f"list --problem {problem!r} matches no preset; problems: {', '.join(problems)}"
        )
    return chosen


def print_listing(as_json: bool = False, problem: str | None = None) -> None:
    """Presets (grouped by the problem their task solves), tasks and datamodules with their
    origin, from package metadata and the preset files only."""
    from tasks.api import list_datamodules, list_presets, list_tasks

    presets = list_presets()
    if problem:
        presets = _select_problem(presets, problem)
    listing: dict[str, Any] = {
        "presets": presets,
        "tasks": list_tasks(),
        "datamodules": list_datamodules(),
    }
    clashes = {kind: _registry.conflicts(kind) for kind in ("preset", "task", "datamodule")}
    listing["conflicts"] = {kind: found for kind, found in clashes.items() if found}
    if as_json:
        print(json.dumps(listing, indent=2))
        return
    print("Presets (python -m tasks +task=NAME), by problem:\n")
    for task in sorted({p["task"] for p in presets.values()}):
        _print_table(
            f"{task or 'no task named'}:",
            [(n, p["description"], p["origin"]) for n, p in presets.items() if p["task"] == task],
        )
    if problem:
        return
    _print_table(
        "Tasks (task._name_=NAME):",
        [(n, t["value"], t["origin"]) for n, t in listing["tasks"].items()],
    )
    _print_table(
        "Datamodules (datamodule._name_=NAME):",
        [(n, d["value"], d["origin"]) for n, d in listing["datamodules"].items()],
    )
    for kind, found in listing["conflicts"].items():
        for message in found.values():
            print(f"Unusable {kind}: {message}")
    if _registry.plugins_disabled():
        print(f"Third-party plugins are off ({_registry.DISABLE_PLUGINS_ENV} is set).")


def _full_error(cfg: Any = None) -> bool:
    if os.environ.get(FULL_ERROR_ENV) == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return True
    return bool(cfg is not None and cfg.get("full_error", False))


def _user_error_types() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import OmegaConfBaseException

    return (UserError, OmegaConfBaseException, HydraException, MisconfigurationException)


def _message(exc: BaseException) -> str:
    """One line: OmegaConf errors name the config key instead of dumping their fields."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if isinstance(exc, MissingMandatoryValue) and getattr(exc, "full_key", None):
        return f"missing value for {exc.full_key}: set it with {exc.full_key}=VALUE"
    if isinstance(exc, OmegaConfBaseException) and getattr(exc, "full_key", None):
        return f"{getattr(exc, 'msg', None) or exc} (config key: {exc.full_key})"
    return " ".join(str(exc).split()) or type(exc).__name__


def _fail(exc: BaseException) -> None:
    message = " ".join(_message(exc).split())
    print(f"error: {message}\n(set {FULL_ERROR_ENV}=1 for the full traceback)", file=sys.stderr)
    sys.exit(2)


def _route_lightning_logs_to_hydra() -> None:
    """Hydra logs the root logger to the console and ``tasks.log``; the ``lightning``
    package adds a console handler of its own, which would print every line twice."""
    import logging

    lightning_logger = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)


def _closing_block(cfg: Any, summary: dict[str, Any]) -> list[str]:
    """The end-of-run block, with the commands to predict with and to continue this run."""
    from hydra.core.hydra_config import HydraConfig

    from tasks.engine.console import end_of_run, next_commands

    commands: list[tuple[str, str]] = []
    if summary.get("mode") == "train" and HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
        datamodule = cfg.get("datamodule") or {}
        task_cls = _registry.load("task", str(cfg.task._name_))
        generates = hasattr(task_cls, "generate_report")
        commands = next_commands(summary, overrides, datamodule.get("path"), generates)
    return end_of_run(summary, commands)


def _disk_full_message(cfg: Any, exc: OSError) -> str:
    """What a full disk left: every file of the run is replaced only once written whole."""
    from hydra.core.hydra_config import HydraConfig

    folder = cfg.get("output_dir") or (
        HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else os.getcwd()
    )
    where = f" writing {exc.filename}" if exc.filename else ""
    last = os.path.join(folder, "checkpoints", "last.ckpt")
    resume = f"; free space, then resume with ckpt_path={last}" if os.path.isfile(last) else ""
    return (
        f"the disk is full{where}: the files already in {folder} are intact (each is replaced "
        f"only once written whole), the one being written was not kept{resume}"
    )


def _interrupted_lines(cfg: Any, stop: RunInterrupted) -> list[str]:
    """Where an interrupted run stands and the exact command that resumes it."""
    from hydra.core.hydra_config import HydraConfig

    from tasks.engine.console import next_commands

    summary = stop.summary
    last = summary.get("last_checkpoint")
    lines = [
        f"interrupted by {stop.signal_name} after {summary.get('epochs')} epoch(s); "
        f"partial summary: {summary.get('output_dir')}/summary.json"
    ]
    if not last:
        lines.append("no checkpoint was written yet: nothing to resume from")
        return lines
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    # no epoch count: the command resumes within the run's own epoch budget
    for label, command in next_commands({"last_checkpoint": last}, overrides, None, False):
        lines.append(f"{label}: {command}")
    return lines


def _run_job(cfg: Any) -> float | None:
    """Hydra's job function: run, report user errors in one line, print the closing block,
    return the objective."""
    from tasks.engine.console import say, setup_cli_output
    from tasks.engine.runner import execute

    _route_lightning_logs_to_hydra()
    setup_cli_output()

    try:
        summary = execute(cfg, console=True)
    except RunInterrupted as stop:
        for line in _interrupted_lines(cfg, stop):
            say(line)
        raise
    except _user_error_types() as exc:
        from tasks.sweep import in_multirun

        if _full_error(cfg) or in_multirun():
            raise  # a sweep records the failed job and goes on with the next one
        _fail(exc)
    except OSError as exc:
        if exc.errno != errno.ENOSPC or _full_error(cfg):
            raise
        _fail(UserError(_disk_full_message(cfg, exc)))
    for line in _closing_block(cfg, summary):
        say(line)
    score = (summary.get("best_score") or {}).get("value")
    return score


def _hydra_main() -> None:
    import hydra

    from tasks.engine.hydra_config import primary_config_dir, register_search_path_plugin

    register_search_path_plugin()
    hydra.main(config_path=primary_config_dir(), config_name="config", version_base="1.3")(
        _run_job
    )()


def _refuse_previous_run_dir(overrides: list[str]) -> None:
    """A ``hydra.run.dir`` that holds an earlier run is refused before Hydra writes into it
    (see :func:`tasks._files.refuse_previous_run`); dated default folders are always new."""
    from tasks._files import ensure_folder, other_rank, refuse_previous_run

    values = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep:
            values[key.lstrip("+~")] = value
    multirun = any(a in ("-m", "--multirun") for a in overrides)
    run_dir = values.get("hydra.run.dir")
    if run_dir and not multirun and not other_rank():
        mode, ckpt = values.get("mode", "train"), values.get("ckpt_path")
        refuse_previous_run(run_dir, "hydra.run.dir", mode, None if ckpt in ("null", "") else ckpt)
        ensure_folder(run_dir, "hydra.run.dir")


def _export_command(args: list[str]) -> None:
    """``export RUN_DIR_OR_CKPT``: write a bundle and say where it is."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tasks export",
        description="Export a trained run to a self-contained bundle folder (docs/deploy.md).",
    )
    parser.add_argument("source", help="a run folder, or a checkpoint in one")
    parser.add_argument("--out", help="bundle folder (default: RUN_DIR/bundle)")
    parser.add_argument("--name", help="model name of a versioned layout OUT/NAME/VERSION")
    parser.add_argument("--version", type=int, help="version number (default: the next one)")
    parser.add_argument("--onnx", action="store_true", help="add model.onnx (parity-checked)")
    options = parser.parse_args(args)
    from tasks.bundle import export_bundle

    folder = export_bundle(options.source, options.out, options.onnx, options.name, options.version)
    manifest = json.loads((folder / "manifest.json").read_text())
    print(f"bundle written to {folder}")
    parity = (manifest.get("onnx") or {}).get("parity")
    if parity:
        worst = max(parity[k]["max_abs_diff"] for k in ("batched", "batch_size_1"))
        print(f"ONNX: parity checked on {parity['rows']} test rows, max abs difference {worst:.2g}")
    print(f"next: python -m tasks serve {folder}")


def _serve_command(args: list[str]) -> None:
    """``serve BUNDLE``: an HTTP server until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tasks serve",
        description="Serve a bundle over HTTP (POST /predict, /v1/models/NAME:predict).",
    )
    parser.add_argument("bundle", help="a bundle folder written by export")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="model copies (processes)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="dynamic batching")
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds to fill")
    options = parser.parse_args(args)
    from tasks.serve import serve

    serve(
        options.bundle,
        options.host,
        options.port,
        options.workers,
        options.max_batch_size,
        options.batch_timeout,
    )


def _doctor_command(args: list[str]) -> None:
    """``doctor +task=PRESET [overrides] [--strict] [--out DIR]``: inspect the data only."""
    from tasks.doctor import main as doctor_main

    sys.exit(doctor_main(args))


SUBCOMMANDS = {"export": _export_command, "serve": _serve_command, "doctor": _doctor_command}


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args:
            print(USAGE)
            _print_table(
                "Presets:",
                [
                    (n, p.description, p.source.origin)
                    for n, p in sorted(_registry.presets().items())
                ],
            )
            sys.exit(2)
        if args[0] in ("list", "ls"):
            try:
                print_listing(*_list_options(args[1:]))
                sys.stdout.flush()
            except BrokenPipeError:  # `list | head`: the reader has what it wanted
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        if args[0] in SUBCOMMANDS:
            SUBCOMMANDS[args[0]](args[1:])
            return
        if args[0] in ("--version", "-V", "version") and len(args) == 1:
            print(version_line())
            return
        if args[0] in ("help", "-h", "--help") and len(args) == 1:
            print(USAGE)
            return
        from tasks.engine.hydra_config import normalize_overrides

        overrides = normalize_overrides(args)
        _refuse_previous_run_dir(overrides)
    except UserError as exc:
        if _full_error():
            raise
        _fail(exc)
    sys.argv = [sys.argv[0], *overrides]
    _hydra_main()


if __name__ == "__main__":
    main()
