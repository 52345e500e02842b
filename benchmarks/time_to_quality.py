"""Time to a good model: the library's CLI against the same network in Keras 3, per problem.

For each reference problem, one case after the other in one run, two fresh processes, each
timed from before it starts to its exit (imports count):

(a) the library as a user runs it: ``python -m tasks +task=PRESET ... output_dir=DIR``. Its
    time holds everything a user waits for: imports, reading and preparing the data,
    training with the preset's early stopping, testing the best checkpoint, the
    scikit-learn peers and the report. The test figure comes from ``DIR/summary.json``;
(b) the same network written in Keras 3 on the torch backend (``keras_model`` of
    ``overhead.py``, compiled like the preset): import keras, ``fit`` on the library's own
    training and validation rows with the same batch size and the same maximum of epochs,
    ``EarlyStopping(val_loss)`` with the preset's patience and the best weights restored
    (where the preset has no early stopping: every epoch, best weights restored, as the
    library tests its best checkpoint), then the same test figure on the library's test
    rows.

The rows Keras sees are prepared once, before either process starts, by the library's
datamodule (``overhead.build`` and ``keras_arrays``) and handed over as an ``.npz``: the
Keras side's reading, splitting, scaling, tokenising and windowing are not in its time
(loading the ``.npz`` is). That favours Keras.

Problems and the figure compared (test split; "as good" allows 0.005 in the figure's units):

- ``spam_mlp``: ``spam_reference``, the Dense(2)-Dense(1) net on Spambase; accuracy;
- ``fashion_cnn``: ``mnist_cnn`` (the reference Conv(32)-Pool-Dense(64) CNN) on Debian's
  Fashion-MNIST (``apt install dataset-fashion-mnist``, read in place; skipped without it);
  accuracy;
- ``curves_conv1d``: ``curves_conv1d``, the reference Conv1D stack; accuracy;
- ``electricity_lstm``: ``electricity_lstm`` with the reference LSTM(6) on the last 24 hours;
  R^2 in the series' own units (MW), as the library computes it;
- ``sentiment_lstm``: ``sentiment_lstm``, Embedding(16)-LSTM(32), on the shared tweets
  (``../shared/data/tweets_sentiment.csv``, negative against positive; overhead.py's
  generated reviews where that file is missing); accuracy;
- ``names_lstm``: ``names_lstm``, the character LSTM on the bundled names; cross-entropy
  per character in nats, padding masked.

What still differs between the two sides is printed under the table.

    python benchmarks/time_to_quality.py                      # every problem, full presets
    python benchmarks/time_to_quality.py --cases spam_mlp names_lstm --epochs-scale 0.1
    python benchmarks/time_to_quality.py --threads 4 --json time_to_quality.json

``--epochs-scale`` multiplies every preset's maximum of epochs (0.1 for a quick look).
Keras: ``pip install "lightning-tasks[bench]"``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import (  # noqa: E402
    CASES,
    build,
    keras_arrays,
    keras_model,
    materialise,
    sentiment_data,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
#: How much worse than Keras's figure the library's may be and still count as as good.
TOLERANCE = 0.005
LABELS = {"test/acc": "acc", "test/r2": "R²", "test/loss": "nats/char"}


class Skipped(Exception):
    """A problem's data is not on this machine (the message says what is missing)."""


# -- problems ------------------------------------------------------------------------------
def no_data(folder: Path) -> tuple[list[str], str]:
    return [], "bundled data"


def fashion_data(folder: Path) -> tuple[list[str], str]:
    """Debian's Fashion-MNIST, read in place (``data_dir`` is an empty folder, so no other
    copy is picked up, and nothing is downloaded)."""
    from datamodules.image_datasets import FashionMNISTDataModule

    debian = Path(FashionMNISTDataModule.SEARCH[0])
    missing = [name for name in FashionMNISTDataModule.FILES if not (debian / name).is_file()]
    if missing:
        found = f"lacks {', '.join(missing)}" if debian.is_dir() else "does not exist"
        raise Skipped(f"{debian} {found} (apt install dataset-fashion-mnist)")
    overrides = [
        "datamodule._name_=fashion_mnist",
        "datamodule.download=false",
        f"datamodule.data_dir={folder}",
    ]
    return overrides, f"Fashion-MNIST from {debian}"


def sentiment_texts(folder: Path) -> tuple[list[str], str]:
    """The shared labelled tweets, negative against positive (the reference network is a
    binary classifier); overhead.py's generated reviews where the file is missing."""
    source = SHARED / "tweets_sentiment.csv"
    if not source.is_file():
        return sentiment_data(folder, 1.0), f"generated reviews ({source} not found)"
    frame = pd.read_csv(source, keep_default_na=False)
    frame = frame[frame["label"] != "neutral"]
    path = folder / "tweets.csv"
    frame.to_csv(path, index=False, quoting=csv.QUOTE_ALL)  # pandas leaves a bare \r unquoted
    return [f"datamodule.path={path}"], f"{len(frame):,} shared tweets, negative/positive"


@dataclass(frozen=True)
class Problem:
    """A reference problem: the preset and overrides a user runs, the case of overhead.py
    whose Keras network is the same network, and the test figure both sides report."""

    name: str
    case: str  # key of overhead.CASES: selects keras_arrays' and keras_model's network
    preset: str
    overrides: tuple[str, ...]
    metric: str  # key of summary.json's metrics; the Keras child computes the same
    reference: str  # the figure the reference material reports
    notes: str  # what still differs between the two sides
    data: Callable[[Path], tuple[list[str], str]] = no_data


PROBLEMS = {
    p.name: p
    for p in (
        Problem(
            "spam_mlp",
            "spam_mlp",
            "spam_reference",
            (),
            "test/acc",
            "acc 0.986 (row id leaked; honest 0.94-0.96)",
            "no early stopping in the preset: both test the best epoch by val loss; the "
            "library's head is 2 logits + softmax, Keras's 1 sigmoid",
        ),
        Problem(
            "fashion_cnn",
            "mnist_cnn",
            "mnist_cnn",
            (),
            "test/acc",
            "MNIST val acc 0.981 (none for Fashion-MNIST)",
            "the library scales pixels by the training mean and std, Keras by 1/255",
            fashion_data,
        ),
        Problem(
            "curves_conv1d",
            "curves_conv1d",
            "curves_conv1d",
            (),
            "test/acc",
            "acc 0.983",
            "the library augments (reversed and negated curves, the preset's default); Keras "
            "trains on the curves as they are",
        ),
        Problem(
            "electricity_lstm",
            "lstm_forecaster",
            "electricity_lstm",
            ("task.hidden_size=6",),
            "test/r2",
            "R² 0.942 (stateful LSTM(6), Ontario hourly)",
            "the reference LSTM(6) in place of the preset's 64 units; the library anneals the "
            "learning rate (cosine, the preset's), Keras keeps it constant",
        ),
        Problem(
            "sentiment_lstm",
            "sentiment_lstm",
            "sentiment_lstm",
            (),
            "test/acc",
            "acc 0.739 (Rotten Tomatoes reviews)",
            "Keras reads texts padded in front (Keras's pad_sequences default) to the last "
            "state; the library reads each text's last token",
            sentiment_texts,
        ),
        Problem(
            "names_lstm",
            "char_lstm",
            "names_lstm",
            (),
            "test/loss",
            "acc ~0.3 (3-character windows; no loss given)",
            "the library has dropout 0.1 before the head (the preset's), Keras none; Keras's "
            "training loss divides by every position, padding included",
        ),
    )
}


# -- the two sides -------------------------------------------------------------------------
def timed(command: list[str], env: dict[str, str], log: Path) -> float:
    """Seconds from before ``command`` starts to its exit; it runs in the folder of ``log``
    (where Hydra puts its ``outputs/``) and writes its output to ``log``."""
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(
            command, env=env, cwd=log.parent, stdout=handle, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - start
    if done.returncode:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
    return seconds


def pre_padded(ids: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Token ids padded after each text (the library's) as Keras pads them: in front."""
    out = np.zeros((len(ids), width), dtype=ids.dtype)
    columns = np.arange(width)[None, :] - (width - lengths)[:, None]
    keep = columns >= 0
    out[keep] = ids[np.nonzero(keep)[0], columns[keep]]
    return out


def keras_data(problem: Problem, overrides: list[str], patience: int | None, path: Path) -> None:
    """The library's training, validation and test rows as Keras arrays, with what the Keras
    child needs to build, fit and score the network, in one ``.npz``."""
    case = dataclasses.replace(CASES[problem.case], preset=problem.preset)
    cfg, datamodule, task = build(case, overrides)
    batches = [
        materialise(loader)
        for loader in (
            datamodule.train_dataloader(),
            datamodule.val_dataloader(),
            datamodule.test_dataloader(),
        )
    ]
    splits = [keras_arrays(case, batch) for batch in batches]
    if problem.case == "sentiment_lstm":  # (ids, lengths, label) batches
        width = max(x.shape[1] for x, _, _ in splits)
        splits = [
            (pre_padded(x, batch[1].numpy(), width), y, w)
            for (x, y, w), batch in zip(splits, batches)
        ]
    arrays = {}
    for suffix, (x, y, w) in zip(("", "v", "t"), splits):
        arrays |= {f"x{suffix}": x, f"y{suffix}": y}
        if w is not None:
            arrays[f"w{suffix}"] = w
    meta = {
        "hparams": json.loads(json.dumps(dict(task.hparams), default=list)),  # OmegaConf lists
        "batch_size": int(cfg.datamodule.batch_size),
        "eval_batch_size": int(cfg.datamodule.get("eval_batch_size") or cfg.datamodule.batch_size),
        "epochs": int(cfg.trainer.max_epochs),
        "patience": patience,
    }
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def keras_figure(case: str, pred: np.ndarray, y: np.ndarray, w: Any, hp: dict) -> float:
    """The library's test figure of ``case`` from Keras's test outputs."""
    if case == "mnist_cnn":
        return float((pred.argmax(axis=1) == y).mean())
    if case == "lstm_forecaster":  # R^2 in original units, as Forecasting.metric_inputs
        center, scale = np.array(hp["target_center"]), np.array(hp["target_scale"])
        pred, y = (
            v.astype(np.float64).reshape(len(v), -1, len(center)) * scale + center
            for v in (pred, y)
        )
        if hp["target_log"]:
            pred, y = np.exp(pred), np.exp(y)
        residual = ((y - pred) ** 2).sum(axis=(0, 1))
        spread = ((y - y.mean(axis=(0, 1))) ** 2).sum(axis=(0, 1))
        return float((1 - residual / spread).mean())  # uniform average over targets
    if case == "char_lstm":  # cross-entropy per character: logits, targets, 0/1 weights
        shifted = pred - pred.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        nll = -np.take_along_axis(log_probs, y[..., None].astype(np.int64), axis=-1)[..., 0]
        return float((nll * w).sum() / w.sum())
    return float(((pred[:, 0] > 0.5) == (y > 0.5)).mean())  # a sigmoid output


def keras_child(name: str, path: Path, seed: int | None = None) -> None:
    """Fit and test the Keras network on the rows in ``path``; print one JSON line."""
    import keras

    if seed is not None:  # initial weights, shuffling and dropout
        keras.utils.set_random_seed(seed)

    problem = PROBLEMS[name]
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    x, xv, xt = arrays["x"], arrays["xv"], arrays["xt"]
    hp = meta["hparams"]
    # keras_model reads the task's hyperparameters, and the padded width from the config
    model = keras_model(
        CASES[problem.case],
        SimpleNamespace(hparams=SimpleNamespace(**hp)),
        SimpleNamespace(datamodule=SimpleNamespace(max_length=x.shape[1])),
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        patience=meta["epochs"] if meta["patience"] is None else meta["patience"],
        restore_best_weights=True,
    )
    history = model.fit(
        x,
        arrays["y"],
        sample_weight=arrays.get("w"),
        batch_size=meta["batch_size"],
        epochs=meta["epochs"],
        validation_data=(xv, arrays["yv"]) + ((arrays["wv"],) if "wv" in arrays else ()),
        validation_batch_size=meta["eval_batch_size"],
        callbacks=[stop],
        verbose=2,
    )
    pred = model.predict(xt, batch_size=meta["eval_batch_size"], verbose=0)
    figure = keras_figure(problem.case, pred, arrays["yt"], arrays.get("wt"), hp)
    result = {"figure": figure, "epochs": len(history.epoch), "best_epoch": stop.best_epoch + 1}
    print(json.dumps(result), flush=True)


def bench_problem(
    problem: Problem,
    scale: float,
    work: Path,
    env: dict[str, str],
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Prepare the Keras rows, then time the library's run and the Keras run of ``problem``;
    with ``seeds``, once per seed (the library's ``seed``: its split, initialisation and
    shuffling; Keras is seeded the same and gets the same rows), figures and times averaged."""
    from tasks.api import compose
    from tasks.peers import LOWER_IS_BETTER

    folder = work / problem.name
    folder.mkdir(parents=True)
    data_overrides, source = problem.data(folder)
    overrides = [*problem.overrides, *data_overrides]
    cfg = compose(problem.preset, overrides)
    epochs = max(1, round(int(cfg.trainer.max_epochs) * scale))
    overrides.append(f"trainer.max_epochs={epochs}")
    stopping = cfg.callbacks.get("early_stopping")
    patience = int(stopping.patience) if stopping else None
    runs = []
    for seed in seeds if seeds is not None else [None]:
        where = folder if seed is None else folder / f"seed{seed}"
        where.mkdir(exist_ok=True)
        seeded = overrides if seed is None else [*overrides, f"seed={seed}"]
        arrays = where / "keras.npz"
        keras_data(problem, seeded, patience, arrays)
        command = [sys.executable, "-m", "tasks", f"+task={problem.preset}", *seeded]
        library_s = timed([*command, f"output_dir={where / 'run'}"], env, where / "library.log")
        summary = json.loads((where / "run" / "summary.json").read_text())
        child = [sys.executable, __file__, "--keras-child", problem.name, "--data", str(arrays)]
        child += [] if seed is None else ["--seed", str(seed)]
        keras_s = timed(child, {**env, "KERAS_BACKEND": "torch"}, where / "keras.log")
        lines = (where / "keras.log").read_text().splitlines()
        keras = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
        runs.append((command, library_s, summary, keras_s, keras))

    def mean(values: list[float]) -> float:
        return statistics.fmean(values)

    library = mean([r[2]["metrics"][problem.metric] for r in runs])
    other = mean([r[4]["figure"] for r in runs])
    library_s, keras_s = mean([r[1] for r in runs]), mean([r[3] for r in runs])
    sign = -1 if problem.metric.split("/", 1)[1] in LOWER_IS_BETTER else 1
    worse = sign * (library - other) < -TOLERANCE
    slower = library_s > keras_s
    verdict = "faster and at least as good"
    if worse:
        verdict = "worse quality" + (", slower" if slower else "")
    elif slower:
        verdict = "slower"
    command = runs[0][0] if seeds is None else [*runs[0][0][:-1]]  # the seed varies
    return {
        "case": problem.name,
        "command": " ".join(["python -m tasks", *command[3:]]),
        "data": source,
        "reference": problem.reference,
        "metric": problem.metric,
        "max_epochs": epochs,
        "patience": patience,
        "seeds": seeds,
        "library_s": library_s,
        "library_figure": library,
        "library_figures": [r[2]["metrics"][problem.metric] for r in runs],
        "library_epochs": mean([r[2].get("epochs") or 0 for r in runs]),
        "library_best_epoch": runs[0][2].get("best_epoch"),
        "keras_s": keras_s,
        "keras_figure": other,
        "keras_figures": [r[4]["figure"] for r in runs],
        "keras_epochs": mean([r[4]["epochs"] for r in runs]),
        "keras_best_epoch": runs[0][4]["best_epoch"],
        "ratio": library_s / keras_s,
        "verdict": verdict,
        "notes": problem.notes,
    }


def _figure(mean: float, values: list[float]) -> str:
    if len(values) < 2:
        return f"{mean:.4f}"
    return f"{mean:.4f} +- {statistics.stdev(values):.4f}"


# -- report --------------------------------------------------------------------------------
def markdown(rows: list[dict[str, Any]], skipped: list[str], meta: dict[str, Any]) -> str:
    lines = [
        f"Machine: {meta['cpus']} CPU cores, torch {meta['torch']} ({meta['threads']} threads), "
        f"lightning {meta['lightning']}, keras {meta['keras']}, Python {meta['python']}; "
        f"{meta['when']}.",
        f"Command: `{meta['command']}`",
        "",
        "| case | reference figure | library wall s | library test figure | Keras wall s | "
        "Keras test figure | library / Keras time | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = LABELS[r["metric"]]
        lines.append(
            f"| {r['case']} | {r['reference']} | {r['library_s']:.1f} "
            f"({r['library_epochs']:g} ep) | {label} "
            f"{_figure(r['library_figure'], r['library_figures'])} | "
            f"{r['keras_s']:.1f} ({r['keras_epochs']:g} ep) | {label} "
            f"{_figure(r['keras_figure'], r['keras_figures'])} | "
            f"**{r['ratio']:.2f}** | {r['verdict']} |"
        )
    lines += [
        "",
        "Wall time: from before the process starts to its exit; ep: epochs run (maximum "
        "times --epochs-scale, fewer where early stopping ended the run). As good: within "
        f"{TOLERANCE} of Keras's figure."
        + (
            f" With --seeds: means (+- sample std) over seeds {meta['seeds']}, each seed its "
            "own split, the same rows for both sides."
            if meta.get("seeds")
            else ""
        ),
        "Caveat: the Keras side's data preparation (reading, splitting, scaling, tokenising, "
        "windowing) was done by the library before its process started and is not in its "
        "time (loading the prepared arrays is); the library's time holds its own data "
        "preparation, the scikit-learn peers and the report. This favours Keras.",
        "",
        *(f"- {r['case']}: `{r['command']}`; {r['data']}; {r['notes']}." for r in rows),
        *(f"- skipped {line}" for line in skipped),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument(
        "--epochs-scale", type=float, default=1.0, help="multiplies each preset's max_epochs"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of both sides (default: torch's)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="run each side with seeds 0..N-1 (split, initialisation) and average "
        "(default: one run, the preset's seed)",
    )
    parser.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keras-child", choices=list(PROBLEMS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.keras_child:
        keras_child(args.keras_child, args.data, args.seed)
        return

    # the children run in temporary folders: the checkout stays importable without an install
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    if args.threads:  # read by torch at start-up in both child processes
        env["OMP_NUM_THREADS"] = str(args.threads)
    import lightning
    import torch

    meta = {
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "lightning": lightning.__version__,
        "keras": importlib.metadata.version("keras"),
        "python": sys.version.split()[0],
        "when": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/time_to_quality.py " + " ".join(argv or sys.argv[1:]),
        "seeds": list(range(args.seeds)) if args.seeds else None,
    }
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            try:
                row = bench_problem(
                    PROBLEMS[name], args.epochs_scale, Path(tmp), env, meta["seeds"]
                )
            except Skipped as exc:
                skipped.append(f"{name}: {exc}")
                print(f"{name:16s} skipped: {exc}", flush=True)
                continue
            rows.append(row)
            print(
                f"{name:16s} library {row['library_s']:.1f} s {row['library_figure']:.4f}  "
                f"keras {row['keras_s']:.1f} s {row['keras_figure']:.4f}  "
                f"ratio {row['ratio']:.2f}  {row['verdict']}",
                flush=True,
            )
    print(markdown(rows, skipped, meta))
    if args.json:
        report = {"meta": meta, "cases": rows, "skipped": skipped}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
