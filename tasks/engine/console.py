"""What a person at a terminal sees of a CLI run: plain log lines, one line per warning, no
third-party chatter, and a closing block with the results and the next commands.

Everything still reaches ``tasks.log``: the filters here act on the console handler only.
"""

from __future__ import annotations

import logging
import shlex
import sys
import warnings
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("tasks")

#: INFO records of these loggers go to ``tasks.log`` only (their warnings still show).
QUIET_LOGGERS = ("lightning", "pytorch_lightning", "matplotlib", "PIL", "fsspec", "torch")

#: Warnings that are about third-party internals, not about the user's run.
NOISE_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",  # lightning's _pytree against newer torch
)


def is_terminal() -> bool:
    """Whether standard output is an interactive terminal (not a pipe, a file or CI's log)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class ConsoleFormatter(logging.Formatter):
    """The message alone; ``warning:``/``error:`` before records of those levels."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


class ConsoleHandler(logging.StreamHandler):
    """Information on standard output, warnings and errors on standard error (looked up at
    each record, so redirection and capture keep working); third-party INFO is dropped."""

    def __init__(self, stream: Any = None) -> None:  # ``stream`` from Hydra's default config
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and record.name.startswith(QUIET_LOGGERS):
            return
        self.setStream(sys.stderr if record.levelno >= logging.WARNING else sys.stdout)
        super().emit(record)


def say(line: str) -> None:
    """One line for the person running: through logging when the CLI set up its console
    handler (so it is in ``tasks.log`` too), else printed."""
    if any(isinstance(h, ConsoleHandler) for h in logging.getLogger().handlers):
        log.info(line)
    else:
        print(line, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    """``warnings.showwarning`` for the CLI: one ``warning: ...`` line, no source echo."""
    logging.getLogger("tasks.warnings").warning("%s", " ".join(str(message).split()))


def setup_cli_output() -> None:
    """Route warnings through logging as one line each and silence third-party noise."""
    warnings.showwarning = _show_warning
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _quoted(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


#: Overrides that belong to one run and must not be repeated in the next commands.
_RUN_ONLY = ("mode", "ckpt_path", "output_dir", "hydra.run.dir", "hydra.output_subdir")


def next_commands(
    summary: dict[str, Any], overrides: Sequence[str], predict_input: str | None, generates: bool
) -> list[tuple[str, str]]:
    """``(label, command)`` to predict with (or sample from) and to continue this run."""
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+") not in _RUN_ONLY]
    base = ["python", "-m", "tasks", *kept]
    commands = []
    best, last = summary.get("best_checkpoint"), summary.get("last_checkpoint")
    if best:
        if generates:
            commands.append(("sample", _quoted([*base, "mode=generate", f"ckpt_path={best}"])))
        else:
            path = predict_input or "NEW_DATA"
            args = [*base, "mode=predict", f"ckpt_path={best}", f"datamodule.predict_path={path}"]
            commands.append(("predict", _quoted(args)))
    if best and summary.get("output_dir"):
        commands.append(
            ("export", _quoted(["python", "-m", "tasks", "export", summary["output_dir"]]))
        )
    if last:
        epochs = int(summary.get("max_epochs") or summary.get("epochs") or 0)
        if summary.get("stopped_early") or not epochs:  # within the run's own epoch budget
            commands.append(("resume", _quoted([*base, f"ckpt_path={last}"])))
        else:  # the budget was spent: as many epochs again
            kept = [o for o in kept if o.partition("=")[0].lstrip("+") != "trainer.max_epochs"]
            args = ["python", "-m", "tasks", *kept, f"ckpt_path={last}"]
            commands.append(("continue", _quoted([*args, f"trainer.max_epochs={2 * epochs}"])))
    return commands


def _baseline_cell(baseline: dict[str, Any], metric: str) -> str:
    """The baseline's ``metric``; where there are several named baselines instead
    (``naive_mae`` and ``seasonal_naive_mae``, ``unigram_loss`` and ``bigram_loss``), the
    best of them, with its name."""
    exact = baseline.get(f"baseline/{metric}")
    if exact is not None:
        return _number(exact)
    named = {
        key[len("baseline/") : -len(metric) - 1]: value
        for key, value in baseline.items()
        if key.endswith(f"_{metric}") and isinstance(value, (int, float))
    }
    if not named:
        return _number(None)
    from tasks.peers import LOWER_IS_BETTER

    pick = min if metric in LOWER_IS_BETTER else max
    best = pick(named, key=named.get)
    return f"{_number(named[best])} ({best})"


def end_of_run(summary: dict[str, Any], commands: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The closing block: test metrics beside the baseline, best epoch, time, folder, commands."""
    lines = []
    name = summary.get("preset") or summary.get("task")
    wall = summary.get("wall_time_s")
    head = f"{name}: {summary.get('mode', 'train')} finished in {wall:.1f} s" if wall else str(name)
    best = summary.get("best_score") or {}
    if summary.get("best_epoch"):
        head += (
            f"; best epoch {summary['best_epoch']} of {summary.get('epochs')}"
            f" ({best.get('monitor')} {_number(best.get('value'))})"
        )
    lines.append(head)
    metrics = summary.get("metrics") or {}
    baseline = summary.get("baseline") or {}
    if metrics:
        names = sorted({k.split("/", 1)[1] for k in metrics})
        width = max(len("test metric"), *(len(n) for n in names))
        label = summary.get("baseline_name") or "baseline"
        header = f"  {'test metric':<{width}}  {'model':>9}"
        lines.append(header + (f"  {label:>9}" if baseline else ""))
        for metric in names:
            row = f"  {metric:<{width}}  {_number(metrics.get(f'test/{metric}')):>9}"
            if baseline:
                row += f"  {_baseline_cell(baseline, metric):>9}"
            lines.append(row)
    if summary.get("peer_check"):
        lines.append(f"peer check: {summary['peer_check']}")
    predictions = summary.get("predictions")
    if predictions:
        lines.append(f"predictions: {predictions['path']} ({predictions['rows']} rows)")
    if summary.get("bundle"):
        lines.append(f"bundle: {summary['bundle']}")
        commands = [
            *commands,
            ("serve", _quoted(["python", "-m", "tasks", "serve", summary["bundle"]])),
        ]
    doctor = summary.get("doctor") or {}
    if doctor.get("warnings"):
        lines.append(f"data doctor: {doctor['summary']} ({doctor['path']})")
    if summary.get("report"):
        lines.append(f"report: {summary['report']}")
    if summary.get("output_dir"):
        lines.append(f"run folder: {summary.get('output_dir')}")
    width = max((len(label) for label, _ in commands), default=0)
    for label, command in commands:
        lines.append(f"{label + ':':<{width + 1}} {command}")
    return lines
