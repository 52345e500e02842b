"""Errors a user can fix: the CLI prints them as one line instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable


def did_you_mean(
    name: object, choices: Iterable[object], n: int = 1, render: Callable[[str], str] = repr
) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)
    if len(close) > 1:  # a second guess only when it is about as close as the first

        def score(c: str) -> float:
            return difflib.SequenceMatcher(None, str(name), c).ratio()

        close = [c for c in close if score(c) >= score(close[0]) - 0.1]
    return f" Did you mean {', '.join(render(c) for c in close)}?" if close else ""


class UserError(Exception):
    """Base of every error caused by configuration, data or installed plugins."""


class ConfigError(UserError, ValueError):
    """A configuration value is missing, misnamed or out of range."""


class DataError(UserError, ValueError):
    """Input data is missing, empty, malformed or inconsistent with the configuration."""


class UnknownNameError(UserError, KeyError):
    """A task, datamodule or preset name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(UserError, RuntimeError):
    """Two installed distributions register the same name."""


class PluginLoadError(UserError, ImportError):
    """A registered entry point could not be imported."""


class PluginVersionWarning(UserWarning):
    """A plugin targets another plugin API version than the installed lightning-tasks."""


class ArgumentShadowWarning(UserWarning):
    """A task subclass takes a constructor argument that a base class already takes, for
    something else: both read the one ``hparams`` value."""


class PluginConflictWarning(UserWarning):
    """A plugin registers a name that a built-in already uses (the built-in keeps it)."""


class RunInterrupted(SystemExit):
    """Training stopped by SIGINT (Ctrl-C) or SIGTERM (what SLURM and Kubernetes send).

    The exit code is the shell's for that signal (130, 143), never 0: a scheduler must not
    take an interrupted run for a finished one. ``summary`` is what the partial
    ``summary.json`` holds (its ``last_checkpoint`` is where to resume from).
    """

    def __init__(self, signal_name: str, summary: dict) -> None:
        super().__init__(130 if signal_name == "SIGINT" else 143)
        self.signal_name = signal_name
        self.summary = summary
