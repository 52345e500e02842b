"""What the disk cache benchmarks (``disk_cache.py``, ``text_cache.py``) share.

Each trains a preset three times, each run in a fresh process so that its peak memory is
its own: with ``datamodule.cache=memory``, then ``disk`` with no cache yet, then ``disk``
again (the cache reused). The parent starts the children (``--child MODE``) and reads back
the line each prints (``RESULT`` and a JSON object); a child times its epochs with a
callback and records its peak resident memory. The scripts import this module from their
own folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The cache mode of each run, in order.
MODES = ("memory", "disk", "disk")
#: Each run's name in the table.
RUN_NAMES = ("in memory", "disk cache, first run", "disk cache, reused")
#: What starts a child's line with its results.
RESULT = "RESULT "


# -- in the child ----------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """The process' peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TrainingClock:
    """Seconds per training epoch and the peak resident memory at the end of training.

    Args:
        batches_only: an epoch ends with its last training batch (validation not counted);
            otherwise it lasts from ``on_train_epoch_start`` to ``on_train_epoch_end``.
        on_train_start: called when training starts.
    """

    def __init__(
        self, *, batches_only: bool = False, on_train_start: Callable[[], None] | None = None
    ) -> None:
        self.batches_only = batches_only
        self.on_train_start = on_train_start
        self.epochs: list[float] = []
        self.training_rss: list[float] = []

    @property
    def training_rss_mb(self) -> float:
        """The peak resident memory in MB when training ended."""
        return self.training_rss[0]

    def per_second(self, rows: int) -> float:
        """``rows`` an epoch over the median epoch after the first (the only one if alone)."""
        return rows / statistics.median(self.epochs[1:] or self.epochs)

    def override(self) -> str:
        """The Hydra override that adds this clock's callback to a run.

        Hydra finds callbacks by name, so the callback's class is made here and set as this
        module's ``Timer``."""
        import lightning as L

        clock = self

        class Timer(L.Callback):
            def on_train_start(self, trainer: Any, pl_module: Any) -> None:
                if clock.on_train_start is not None:
                    clock.on_train_start()

            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                self.start = self.last = time.perf_counter()

            def on_train_batch_end(self, *args: Any) -> None:
                if clock.batches_only:
                    self.last = time.perf_counter()

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                end = self.last if clock.batches_only else time.perf_counter()
                clock.epochs.append(end - self.start)

            def on_train_end(self, trainer: Any, pl_module: Any) -> None:
                clock.training_rss.append(peak_rss_mb())

        sys.modules[__name__].Timer = Timer
        return f"+callbacks.bench_timer._target_={__name__}.Timer"


def time_calls(
    owner: Any, name: str, times: list[float], skip: Callable[..., bool] | None = None
) -> None:
    """Replace ``owner.name`` by a wrapper that appends the seconds of each call to ``times``
    (calls for which ``skip(*args)`` is true are made untimed)."""
    real = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        if skip is not None and skip(*args):
            return real(*args, **kwargs)
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)

    setattr(owner, name, timed)


def train(preset: str, overrides: Sequence[str], clock: TrainingClock) -> dict[str, Any]:
    """Run ``preset`` with ``overrides`` timed by ``clock``; the run's summary.

    Early stopping is off (every run trains the same number of epochs), warnings silenced."""
    import warnings

    from tasks.api import compose, run

    cfg = compose(preset, [*overrides, clock.override()])
    cfg.callbacks.early_stopping = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run(cfg)


def print_result(result: dict[str, Any]) -> None:
    """Print a child's results as the line that the parent reads back."""
    print(RESULT + json.dumps(result))


# -- in the parent ---------------------------------------------------------------------------
def add_child_arguments(parser: argparse.ArgumentParser) -> None:
    """The hidden arguments that make a run of the script a child: ``--child MODE``, the cache
    folder and the output folder."""
    parser.add_argument("--child", choices=list(dict.fromkeys(MODES)), help=argparse.SUPPRESS)
    parser.add_argument("--cache-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)


def flags(args: argparse.Namespace, names: Iterable[str]) -> list[str]:
    """``--name value`` for each of ``names`` (attributes of ``args``), to hand on to a child."""
    return [x for n in names for x in (f"--{n.replace('_', '-')}", str(getattr(args, n)))]


def run_child(script: str | Path, mode: str, arguments: Sequence[str]) -> dict[str, Any]:
    """Run ``script --child mode arguments`` in a fresh process from the repository root;
    what it reported. Exits with its output when it fails."""
    command = [sys.executable, str(script), "--child", mode, *arguments]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [x for x in done.stdout.splitlines() if x.startswith(RESULT)]
    if done.returncode or not lines:
        sys.exit(f"the {mode} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix(RESULT))


def run_modes(script: str | Path, work: Path, arguments: Sequence[str]) -> list[dict[str, Any]]:
    """Each of ``MODES`` run by a child of ``script`` with ``arguments``, in ``work`` (emptied
    first; the cache in ``work/data``, removed before the first disk run); their results."""
    shutil.rmtree(work, ignore_errors=True)
    results = []
    for i, mode in enumerate(MODES):
        if i == MODES.index("disk"):
            shutil.rmtree(work / "data", ignore_errors=True)  # the first disk run writes it
        where = ["--cache-root", str(work / "data"), "--out", str(work / f"out{i}")]
        results.append(run_child(script, mode, [*arguments, *where]))
    return results


def print_table(
    results: Sequence[dict[str, Any]],
    speed: str,
    columns: Sequence[str],
    cells: Callable[[dict[str, Any], float], Sequence[str]],
) -> None:
    """A markdown table after a blank line, a row per run: its name, then ``cells(result,
    ratio)`` under ``columns``, where ``ratio`` is the run's ``speed`` over the in-memory
    run's."""
    base = results[0][speed]
    print("\n| run | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, r in zip(RUN_NAMES, results):
        print(f"| {name} | " + " | ".join(cells(r, r[speed] / base)) + " |")
