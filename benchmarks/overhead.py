"""The library's training cost against a hand-written PyTorch loop, side by side.

For each reference network the same network object, data, batch size, optimizer, dtype
and thread count are trained two ways in one process, interleaved A B A B ... to cancel
machine drift:

(a) the library: ``tasks.api.run`` on the preset with the settings users get (progress
    bar, CSV logger, checkpoints, early stopping, model summary), timed per epoch by a
    callback (an epoch includes its validation pass);
(b) a hand-written loop over tensors in memory with a fresh ``randperm`` per epoch,
    training the network's objective (its loss plus its weight penalty, as the Keras side's
    ``kernel_regularizer`` does) and one validation pass per epoch (loss only);
(c) with ``--keras``: the same reference network written in Keras 3 on the torch backend,
    ``model.fit`` on the same arrays (``pip install "lightning-tasks[bench]"``).

Printed per case: median epoch time of each (first epoch of every round dropped),
library/loop ratio, training samples per second and the peak resident memory growth of
the process during each approach. Also: the time from ``python -m tasks`` to the first
training step, and the time of the listing command (which must not import torch).

    python benchmarks/overhead.py                 # every case, 3 rounds
    python benchmarks/overhead.py --cases spam_mlp curves_conv1d --rounds 2 --epochs 3
    python benchmarks/overhead.py --keras            # also Keras 3 (torch backend)

``--scale`` multiplies the row counts (0.25 for a quick look). Nothing is downloaded:
MNIST-shaped images, forecasting and sentiment data are generated with the reference
shapes; spambase and names are bundled.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


# -- measuring ---------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Largest resident set size seen (sampled every 5 ms) above the size at entry."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def epoch_timer_class() -> type:
    import lightning as L

    class EpochTimer(L.Callback):
        """Wall time of every training epoch: from its start to the next epoch's start (the
        last: to the end of training), so its validation pass and whatever runs between
        epochs (checkpoint writes, loggers, schedulers) count too."""

        times: list[float] = []

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._lap()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._lap()

        def _lap(self) -> None:
            now = time.perf_counter()
            if getattr(self, "_start", None) is not None:
                EpochTimer.times.append(now - self._start)
            self._start = now

    return EpochTimer


# -- cases -------------------------------------------------------------------------------
@dataclass
class Case:
    """A preset plus overrides, and how a hand-written loop steps its network."""

    name: str
    preset: str
    overrides: list[str]
    step: Callable[[Any, Any], Any]  # (task, batch) -> loss
    make_data: Callable[[Path, float], list[str]] = lambda folder, scale: []
    notes: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def tuple_step(task: Any, batch: Any) -> Any:
    *inputs, y = batch
    return task.criterion(task(*inputs), y)


def forecast_step(task: Any, batch: Any) -> Any:
    return task.criterion(task(batch["x"]), batch["y"])


def lm_step(task: Any, batch: Any) -> Any:
    x, y = batch
    return task(x, y)[1]


def mnist_data(folder: Path, scale: float) -> list[str]:
    """MNIST-shaped IDX files: 28x28 uint8 images, 10 classes, 60,000 + 10,000 rows."""
    rng = np.random.default_rng(0)
    out = folder / "mnist"
    out.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", int(60000 * scale)), ("t10k", int(10000 * scale))):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for suffix, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(
                int(d).to_bytes(4, "big") for d in array.shape
            )
            (out / f"{prefix}-{suffix}.gz").write_bytes(gzip.compress(header + array.tobytes(), 1))
    return [f"datamodule.data_dir={folder}", "datamodule.download=false"]


def forecast_data(folder: Path, scale: float) -> list[str]:
    """An hourly series long enough for ~90,000 training windows of 24 steps."""
    steps = int(90000 / 0.7 * scale) + 24
    t = np.arange(steps)
    rng = np.random.default_rng(0)
    value = 10000 + 3000 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 200, steps)
    time_index = pd.date_range("2003-05-01", periods=steps, freq="h")
    path = folder / "demand.csv"
    pd.DataFrame({"time": time_index, "demand": value}).to_csv(path, index=False)
    return [f"datamodule.path={path}", "datamodule.target=demand"]


def sentiment_data(folder: Path, scale: float) -> list[str]:
    """25,000 reviews of ~50 tokens over a 10,000-word vocabulary, two classes."""
    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(12000)])
    n = int(25000 * scale)
    labels = rng.integers(0, 2, n)
    texts = [
        " ".join(words[rng.zipf(1.3, 50) % 12000]) + (" good" if label else " bad")
        for label in labels
    ]
    path = folder / "reviews.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return [f"datamodule.path={path}"]


CASES = {
    "spam_mlp": Case(
        "spam_mlp",
        "spam_reference",
        ["trainer.max_epochs={epochs}"],
        tuple_step,
        notes="reference Dense(2)-Dense(1) net, batch 128",
    ),
    "mnist_cnn": Case(
        "mnist_cnn",
        "mnist_cnn",
        ["trainer.max_epochs={epochs}"],
        tuple_step,
        mnist_data,
        notes="reference CNN, MNIST-shaped random images, batch 128",
    ),
    "curves_conv1d": Case(
        "curves_conv1d",
        "curves_conv1d",
        # the preset's augmentation off: the loop trains on the curves as they are
        [
            "trainer.max_epochs={epochs}",
            "task.augment.reverse=false",
            "task.augment.negate=false",
        ],
        tuple_step,
        notes="reference Conv1D stack, batch 32",
    ),
    "lstm_forecaster": Case(
        "lstm_forecaster",
        "forecast_csv",
        [
            "trainer.max_epochs={epochs}",
            "task.hidden_size=6",
            "datamodule.batch_size=256",
            "datamodule.calendar=[]",
            "task.lr=0.05",
        ],
        forecast_step,
        forecast_data,
        notes="reference LSTM(6), 24-step windows, batch 256",
    ),
    "sentiment_lstm": Case(
        "sentiment_lstm",
        "sentiment_lstm",
        ["trainer.max_epochs={epochs}", "datamodule.max_length=50"],
        tuple_step,
        sentiment_data,
        notes="reference Embedding(16)-LSTM(32), 50 tokens, 10k vocabulary, batch 128",
    ),
    "char_lstm": Case(
        "char_lstm",
        "names_lstm",
        ["trainer.max_epochs={epochs}"],
        lm_step,
        notes="character LSTM(128) on names, batch 64",
    ),
}


# -- the two ways --------------------------------------------------------------------------
def build(case: Case, overrides: list[str]) -> tuple[Any, Any, Any]:
    """The library's datamodule and task for the case (the loop trains this same network)."""
    from tasks.api import compose
    from tasks.engine.runner import build_datamodule, build_task

    cfg = compose(case.preset, overrides)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return cfg, datamodule, build_task(cfg, datamodule.data_facts())


def materialise(loader: Any) -> Any:
    """All batches of a library loader at once (windows gathered, padding kept): the
    in-memory tensors a hand-written loop would index."""
    whole = loader.collate(loader.tensors) if loader.collate else loader.tensors
    return whole


def index(batch: Any, rows: Any) -> Any:
    if isinstance(batch, dict):
        return {k: v[rows] for k, v in batch.items()}
    return tuple(t[rows] for t in batch)


def size(batch: Any) -> int:
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return len(first)


def run_loop(case: Case, overrides: list[str], epochs: int) -> tuple[list[float], float, int]:
    import torch

    cfg, datamodule, task = build(case, overrides)
    train = materialise(datamodule.train_dataloader())
    val = materialise(datamodule.val_dataloader())
    optimizer = task.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    batch_size = int(cfg.datamodule.batch_size)
    eval_size = int(cfg.datamodule.get("eval_batch_size") or batch_size)
    n, times = size(train), []
    with PeakRSS() as memory:
        for _ in range(epochs):
            start = time.perf_counter()
            task.train()
            for rows in torch.randperm(n).split(batch_size):
                # the network's training objective: its weight penalty too (the spam net's
                # L2, as Keras' kernel_regularizer adds it; 0 for the other cases)
                loss = case.step(task, index(train, rows)) + task.penalty()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            task.eval()
            with torch.no_grad():
                for rows in torch.arange(size(val)).split(eval_size):
                    case.step(task, index(val, rows))
            times.append(time.perf_counter() - start)
    return times, memory.growth_mb, n


def run_library(case: Case, overrides: list[str], out: Path) -> tuple[list[float], float, int]:
    from tasks.api import compose, run

    timer = epoch_timer_class()
    timer.times = []
    sys.modules[__name__].EpochTimer = timer
    cfg = compose(
        case.preset,
        [*overrides, f"output_dir={out}", f"+callbacks.bench_timer._target_={__name__}.EpochTimer"],
    )
    cfg.callbacks.early_stopping = None  # every round runs the same number of epochs
    with PeakRSS() as memory:
        summary = run(cfg)
    rows = int(summary.get("global_step", 0)) * int(cfg.datamodule.batch_size)
    return list(timer.times), memory.growth_mb, rows // max(len(timer.times), 1)


# -- optional: Keras 3 on the torch backend, on the same arrays ------------------------------
def keras_arrays(case: Case, batch: Any) -> tuple[Any, Any, Any]:
    """(inputs, targets, sample weights) as numpy, channels last, from library tensors."""
    if case.name == "spam_mlp":
        x, _, y = batch
        return x.numpy(), y.float().numpy(), None
    if case.name == "mnist_cnn":
        x, y = batch
        return x.permute(0, 2, 3, 1).float().div(255).numpy(), y.numpy(), None
    if case.name == "curves_conv1d":
        x, y = batch
        return x.transpose(1, 2).numpy(), y.float().numpy(), None
    if case.name == "lstm_forecaster":
        return batch["x"].numpy(), batch["y"].reshape(len(batch["y"]), -1).numpy(), None
    if case.name == "sentiment_lstm":
        ids, _, y = batch
        return ids.numpy(), y.float().numpy(), None
    x, y = batch  # char_lstm: targets -100 where there is none -> weight 0
    weight = (y != -100).float()
    return x.numpy(), y.clamp(min=0).numpy(), weight.numpy()


def keras_model(case: Case, task: Any, cfg: Any) -> Any:
    """The reference network of the case written in Keras, compiled like the preset."""
    import keras
    from keras import layers

    hp = task.hparams
    if case.name == "spam_mlp":
        net = [
            keras.Input((hp.num_features,)),
            layers.Dense(2, "relu", kernel_regularizer=keras.regularizers.l2(0.1)),
            layers.Dense(1, "sigmoid"),
        ]
        loss, optimizer = "binary_crossentropy", keras.optimizers.RMSprop(hp.lr)
    elif case.name == "mnist_cnn":
        net = [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, "relu"),
            layers.Dense(10),
        ]
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        optimizer = keras.optimizers.RMSprop(hp.lr)
    elif case.name == "curves_conv1d":
        net = [
            keras.Input((hp.seq_len, 1)),
            layers.Conv1D(16, 3),
            layers.Conv1D(16, 3),
            layers.MaxPooling1D(2),
            layers.ReLU(),
            layers.Conv1D(16, 3),
            layers.MaxPooling1D(2),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(10, "relu"),
            layers.Dense(1, "sigmoid"),
        ]
        loss, optimizer = "binary_crossentropy", keras.optimizers.Adam(hp.lr)
    elif case.name == "lstm_forecaster":
        net = [keras.Input((hp.lookback, hp.num_inputs)), layers.LSTM(6), layers.Dense(1)]
        loss, optimizer = "mse", keras.optimizers.Adam(hp.lr)
    elif case.name == "sentiment_lstm":
        net = [
            keras.Input((int(cfg.datamodule.max_length),)),
            layers.Embedding(hp.num_tokens, 16),
            layers.LSTM(32),
            layers.Dense(1, "sigmoid"),
        ]
        loss, optimizer = "binary_crossentropy", keras.optimizers.Adam(hp.lr)
    else:
        v = len(hp.vocab)
        net = [
            keras.Input((None,)),
            layers.Embedding(v, hp.embedding_dim),
            layers.LSTM(hp.hidden_size, return_sequences=True),
            layers.Dense(v),
        ]
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        optimizer = keras.optimizers.Adam(hp.lr)
    model = keras.Sequential(net)
    model.compile(optimizer=optimizer, loss=loss)
    return model


def run_keras(case: Case, overrides: list[str], epochs: int) -> tuple[list[float], float]:
    import keras

    cfg, datamodule, task = build(case, overrides)
    x, y, w = keras_arrays(case, materialise(datamodule.train_dataloader()))
    xv, yv, wv = keras_arrays(case, materialise(datamodule.val_dataloader()))
    model = keras_model(case, task, cfg)
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.start)

    batch = int(cfg.datamodule.batch_size)
    with PeakRSS() as memory:
        model.fit(
            x,
            y,
            sample_weight=w,
            batch_size=batch,
            epochs=epochs,
            validation_data=(xv, yv) if wv is None else (xv, yv, wv),
            validation_batch_size=int(cfg.datamodule.get("eval_batch_size") or batch),
            callbacks=[Timer()],
            verbose=2,
        )
    return times, memory.growth_mb


def bench_case(
    case: Case, rounds: int, epochs: int, scale: float, work: Path, keras: bool = False
) -> dict[str, Any]:
    folder = work / case.name
    folder.mkdir(parents=True, exist_ok=True)
    overrides = [o.format(epochs=epochs) for o in case.overrides] + case.make_data(folder, scale)
    overrides.append("seed=0")
    lib_times: list[float] = []
    loop_times: list[float] = []
    lib_mem, loop_mem, n = [], [], 0
    keras_times: list[float] = []
    keras_mem: list[float] = []
    for r in range(rounds):
        times, mb, _ = run_library(case, overrides, folder / f"run{r}")
        lib_times += times[1:]
        lib_mem.append(mb)
        times, mb, n = run_loop(case, overrides, epochs)
        loop_times += times[1:]
        loop_mem.append(mb)
        if keras:
            times, mb = run_keras(case, overrides, epochs)
            keras_times += times[1:]
            keras_mem.append(mb)
    lib, loop = statistics.median(lib_times), statistics.median(loop_times)
    extra = {}
    if keras:
        extra = {
            "keras_s": statistics.median(keras_times),
            "keras_ratio": statistics.median(keras_times) / loop,
            "keras_peak_mb": max(keras_mem),
        }
    return {
        **extra,
        "case": case.name,
        "notes": case.notes,
        "train_rows": n,
        "library_s": lib,
        "loop_s": loop,
        "ratio": lib / loop,
        "library_rows_per_s": n / lib,
        "loop_rows_per_s": n / loop,
        "library_peak_mb": max(lib_mem),
        "loop_peak_mb": max(loop_mem),
        "epochs_timed": len(lib_times),
    }


# -- start-up ------------------------------------------------------------------------------
def startup_times(work: Path) -> dict[str, float]:
    """Seconds from spawning ``python -m tasks`` to its first training step, and of
    ``python -m tasks list``; whether the listing imported torch."""
    stamp = work / "first_step.txt"
    helper = work / "bench_stamp.py"
    helper.write_text(
        "import time\nimport lightning as L\n\n"
        "class FirstStep(L.Callback):\n"
        "    def __init__(self, path):\n        self.path = path\n"
        "    def on_train_batch_start(self, *args):\n"
        "        if self.path:\n"
        "            open(self.path, 'w').write(repr(time.time()))\n            self.path = None\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{work}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.time()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks",
            "+task=iris_mlp",
            "trainer.max_epochs=1",
            f"output_dir={work / 'startup'}",
            "+callbacks.first._target_=bench_stamp.FirstStep",
            f"+callbacks.first.path={stamp}",
        ],
        env=env,
        check=True,
        capture_output=True,
        cwd=work,
    )
    first_step = float(stamp.read_text()) - started
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tasks", "list"], check=True, capture_output=True)
    listing = time.perf_counter() - started
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; sys.argv = ['tasks', 'list'];\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        runpy.run_module('tasks', run_name='__main__')\n"
            "    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules, 'lightning' in sys.modules)",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, lightning"], check=True)
    imports = time.perf_counter() - started
    return {
        "cli_to_first_step_s": first_step,
        "import_torch_and_lightning_s": imports,
        "listing_s": listing,
        "listing_imports_torch": probe.stdout.split()[0] == "True",
    }


# -- report --------------------------------------------------------------------------------
def markdown(
    rows: list[dict[str, Any]], startup: dict[str, Any] | None, meta: dict[str, Any]
) -> str:
    keras_head = " keras s/epoch | keras / loop |" if any("keras_ratio" in r for r in rows) else ""
    lines = [
        f"Machine: {meta['cpus']} CPU cores, torch {meta['torch']} ({meta['threads']} threads), "
        f"lightning {meta['lightning']}, Python {meta['python']}; {meta['when']}.",
        f"Command: `{meta['command']}`",
        "",
        "| case | train rows | library s/epoch | loop s/epoch | library / loop | rows/s library | "
        "rows/s loop | peak MB library | peak MB loop |" + keras_head,
        "|---|---|---|---|---|---|---|---|---|" + "---|" * keras_head.count("|"),
    ]
    for r in rows:
        keras = f" {r['keras_s']:.3f} | **{r['keras_ratio']:.2f}** |" if "keras_ratio" in r else ""
        lines.append(
            f"| {r['case']} ({r['notes']}) | {r['train_rows']:,} | {r['library_s']:.3f} | "
            f"{r['loop_s']:.3f} | **{r['ratio']:.2f}** | {r['library_rows_per_s']:,.0f} | "
            f"{r['loop_rows_per_s']:,.0f} | {r['library_peak_mb']:.0f} | {r['loop_peak_mb']:.0f} |"
            + keras
        )
    if startup:
        lines += [
            "",
            f"- `python -m tasks +task=iris_mlp` to its first training step: "
            f"{startup['cli_to_first_step_s']:.2f} s (of which `import torch, lightning` alone: "
            f"{startup['import_torch_and_lightning_s']:.2f} s).",
            f"- `python -m tasks list`: {startup['listing_s']:.2f} s; imports torch: "
            f"{startup['listing_imports_torch']}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds per case")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first dropped)")
    parser.add_argument("--scale", type=float, default=1.0, help="row-count multiplier")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up timings")
    parser.add_argument(
        "--keras",
        action="store_true",
        help="also time Keras 3 (torch backend) on the same arrays: pip install keras",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--json", type=Path, help="also write the raw figures as JSON")
    args = parser.parse_args(argv)

    if args.keras:  # before keras is first imported
        os.environ["KERAS_BACKEND"] = "torch"
    import lightning
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    meta = {
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "lightning": lightning.__version__,
        "python": sys.version.split()[0],
        "when": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/overhead.py " + " ".join(argv or sys.argv[1:]),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.cases:
            row = bench_case(CASES[name], args.rounds, args.epochs, args.scale, work, args.keras)
            rows.append(row)
            print(
                f"{name:16s} library {row['library_s']:.3f} s  loop {row['loop_s']:.3f} s  "
                f"ratio {row['ratio']:.2f}  ({row['library_rows_per_s']:,.0f} vs "
                f"{row['loop_rows_per_s']:,.0f} rows/s; peak +{row['library_peak_mb']:.0f} / "
                f"+{row['loop_peak_mb']:.0f} MB)"
                + (f"  keras ratio {row['keras_ratio']:.2f}" if "keras_ratio" in row else ""),
                flush=True,
            )
        startup = None if args.no_startup else startup_times(work)
    if startup:
        print(json.dumps(startup, indent=2))
    table = markdown(rows, startup, meta)
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    if args.json:
        args.json.write_text(
            json.dumps({"meta": meta, "cases": rows, "startup": startup}, indent=2)
        )


if __name__ == "__main__":
    main()
