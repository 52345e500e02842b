"""``mode=cv``: k-fold cross-validation of any preset whose datamodule implements the hook.

Each fold is a full run of the preset (fresh task, preprocessing fitted on the fold's
training rows, early stopping on a validation split carved from them, the best checkpoint
tested on the fold's test rows) in its own folder, ``fold_<k>`` (``repeat_<r>/fold_<k>``
when ``cv.repeats > 1``). The CV folder then holds ``cv_results.csv`` (one row per fold),
``cv_summary.json`` (mean, standard deviation and t-based 95% interval per metric),
``oof_predictions.csv`` (every row predicted by the fold that held it out, in row order),
``cv_folds.csv`` (which fold tests each row) and ``cv_scores.png``.

The datamodule side is two methods of :class:`datamodules.base.BaseDataModule`:
``cv_rows(groups)`` says how many rows there are, their labels and groups and whether they
are in time order (which picks the splitter), and ``use_fold(train_rows, test_rows)`` makes
its next ``setup`` build that fold. Re-running with the same ``output_dir`` resumes: a fold
whose ``summary.json`` says ``completed`` is kept as it is, any other is run again.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from tasks._files import ensure_folder, previous_run, write_csv, write_json
from tasks.engine import runner as _runner
from tasks.engine.console import say
from tasks.errors import ConfigError

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "stratified", "kfold", "group", "forward")


@dataclass(frozen=True)
class Options:
    """The ``cv`` block of the config, checked."""

    folds: int = 5
    repeats: int = 1
    strategy: str = "auto"
    groups: str | None = None
    refit: bool = False
    #: Run only these folds (numbers from 0; of every repeat): one Hydra job per fold with
    #: ``-m cv.fold=0,1,2,3,4``; the job that completes the last fold writes the results.
    fold: int | list[int] | None = None

    @property
    def chosen(self) -> set[int] | None:
        """The folds this run trains (None: all of them)."""
        if self.fold is None:
            return None
        return {self.fold} if isinstance(self.fold, int) else set(self.fold)


@dataclass
class Fold:
    """One fold of the plan: its rows and its folder."""

    repeat: int
    fold: int
    train_rows: np.ndarray
    test_rows: np.ndarray
    folder: Path


def read_options(cfg: DictConfig) -> Options:
    """The checked ``cv`` settings of ``cfg`` (defaults where the block is missing).

    Raises:
        ConfigError: a setting out of range or of the wrong kind.
    """
    node = _runner._container(cfg.get("cv") or {})
    if isinstance(node.get("fold"), (list, tuple)):
        node["fold"] = list(node["fold"])
    unknown = sorted(set(node) - set(Options.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f"cv.{unknown[0]} is not a cross-validation setting; the settings are "
            f"{', '.join(Options.__dataclass_fields__)}"
        )
    options = Options(**node)
    for name in ("folds", "repeats"):
        value = getattr(options, name)
        least = 2 if name == "folds" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"cv.{name}={value!r}: expected a whole number >= {least}")
    if options.strategy not in STRATEGIES:
        raise ConfigError(f"cv.strategy={options.strategy!r}; expected one of {STRATEGIES}")
    if options.fold is not None:  # the values as given: a set would merge True into 1
        chosen = [options.fold] if not isinstance(options.fold, list) else options.fold
        if not chosen or any(
            isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < options.folds
            for k in chosen
        ):
            raise ConfigError(
                f"cv.fold={options.fold!r}: expected fold numbers from 0 to {options.folds - 1} "
                "(e.g. -m cv.fold=0,1,2 runs one job per fold)"
            )
        if not cfg.get("output_dir"):
            raise ConfigError(
                f"cv.fold={options.fold!r} runs part of a cross-validation: set output_dir=FOLDER, "
                "the same for every fold's job, so that the folds meet in one CV folder"
            )
    if not isinstance(options.refit, bool):
        raise ConfigError(f"cv.refit={options.refit!r}: expected true or false")
    if options.groups is not None and options.strategy not in ("auto", "group"):
        raise ConfigError(
            f"cv.groups={options.groups!r} with cv.strategy={options.strategy}: groups are "
            "for cv.strategy=group (or auto); drop one of them"
        )
    if options.strategy == "group" and options.groups is None:
        raise ConfigError("cv.strategy=group needs cv.groups=COLUMN (the rows kept together)")
    return options


# -- the folds ---------------------------------------------------------------------------
def choose_strategy(options: Options, rows: Any) -> str:
    """The splitter for ``rows`` (a ``CVRows``): ``cv.strategy``, or what ``auto`` picks.

    Raises:
        ConfigError: the strategy does not fit the data (stratified without classes,
            shuffled folds of rows in time order, repeated forward-chaining).
    """
    strategy = options.strategy
    if strategy == "auto":
        if options.groups is not None:
            strategy = "group"
        elif rows.ordered:
            strategy = "forward"
        elif rows.labels is not None:
            strategy = "stratified"
        else:
            strategy = "kfold"
    if rows.ordered and strategy != "forward":
        raise ConfigError(
            f"cv.strategy={strategy}: these rows are in time order and would be shuffled "
            "across time; use cv.strategy=forward (or auto)"
        )
    if strategy == "stratified" and rows.labels is None:
        raise ConfigError(
            "cv.strategy=stratified needs class labels, and this data has none (regression?); "
            "use cv.strategy=kfold (or auto)"
        )
    if strategy == "forward" and options.repeats > 1:
        raise ConfigError(
            f"cv.repeats={options.repeats} with forward-chaining folds: they are never "
            "shuffled, so every repeat would be the same; use cv.repeats=1"
        )
    return strategy


def make_splits(
    strategy: str, options: Options, rows: Any, seed: int
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(repeat, fold, train_rows, test_rows)`` for every fold, from scikit-learn's
    splitters, seeded by ``seed`` (the same folds on every run of the same config).

    Raises:
        ConfigError: more folds than the data can fill.
    """
    from sklearn.model_selection import (
        GroupKFold,
        KFold,
        RepeatedKFold,
        RepeatedStratifiedKFold,
        StratifiedKFold,
        TimeSeriesSplit,
    )

    k, repeats, n = options.folds, options.repeats, rows.n_rows
    if n < k + (1 if strategy == "forward" else 0):
        raise ConfigError(f"cv.folds={k} is more than the {n} rows can fill; lower cv.folds")
    x = np.zeros((n, 1))
    labels = None if rows.labels is None else pd.factorize(np.asarray(rows.labels))[0]
    out: list[tuple[int, int, np.ndarray, np.ndarray]] = []

    def add(repeat: int, splits: Any) -> None:
        for fold, (train, test) in enumerate(splits):
            out.append((repeat, fold, np.sort(train), np.sort(test)))

    try:
        if strategy == "stratified":
            counts = np.bincount(labels)
            if counts.min() < k:
                raise ConfigError(
                    f"cv.folds={k}: the smallest class has {int(counts.min())} rows, too few "
                    "to put one in every fold; lower cv.folds or use cv.strategy=kfold"
                )
            if repeats == 1:
                add(0, StratifiedKFold(k, shuffle=True, random_state=seed).split(x, labels))
            else:
                splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
                for i, split in enumerate(splitter.split(x, labels)):
                    out.append((i // k, i % k, np.sort(split[0]), np.sort(split[1])))
        elif strategy == "kfold":
            if repeats == 1:
                add(0, KFold(k, shuffle=True, random_state=seed).split(x))
            else:
                splitter = RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
                for i, split in enumerate(splitter.split(x)):
                    out.append((i // k, i % k, np.sort(split[0]), np.sort(split[1])))
        elif strategy == "group":
            if rows.groups is None:
                raise ConfigError("cv.strategy=group needs cv.groups=COLUMN")
            groups = pd.factorize(np.asarray(rows.groups))[0]
            if groups.max() + 1 < k:
                raise ConfigError(
                    f"cv.folds={k} but cv.groups={options.groups!r} has only "
                    f"{int(groups.max()) + 1} groups; lower cv.folds"
                )
            for repeat in range(repeats):
                splitter = (
                    GroupKFold(k)
                    if repeats == 1
                    else GroupKFold(k, shuffle=True, random_state=seed + repeat)
                )
                add(repeat, splitter.split(x, groups=groups))
        else:  # forward: an expanding window of earlier rows, the next block tests
            add(0, TimeSeriesSplit(n_splits=k).split(x))
    except ValueError as exc:  # scikit-learn's own refusal of an impossible split
        raise ConfigError(f"cv.folds={k} with cv.strategy={strategy}: {exc}") from None
    return out


def fold_folder(output_dir: Path, repeat: int, fold: int, repeats: int) -> Path:
    """``fold_<k>``, inside ``repeat_<r>`` when there are repeats."""
    folder = output_dir / f"fold_{fold}"
    return output_dir / f"repeat_{repeat}" / folder.name if repeats > 1 else folder


def _assignment(plan: list[Fold]) -> pd.DataFrame:
    """Which fold tests each row, per repeat: ``row, repeat, fold``."""
    frames = [pd.DataFrame({"row": f.test_rows, "repeat": f.repeat, "fold": f.fold}) for f in plan]
    return pd.concat(frames).sort_values(["repeat", "row"]).reset_index(drop=True)


def _check_same_folds(path: Path, folds: pd.DataFrame) -> None:
    """A resumed CV must split as the interrupted one did."""
    if not path.is_file():
        return
    before = pd.read_csv(path)
    if before.shape != folds.shape or not (before.to_numpy() == folds.to_numpy()).all():
        raise ConfigError(
            f"{path.parent} holds a cross-validation with other folds (the data, seed or cv "
            "settings changed since); choose a new output_dir to start afresh"
        )


# -- one fold ----------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or not whole (an interrupted write)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _completed(folder: Path) -> dict[str, Any] | None:
    summary = _read_json(folder / "summary.json")
    if summary and summary.get("status") == "completed" and (folder / "oof.csv").is_file():
        return summary
    return None


def _fresh_datamodule(
    cfg: DictConfig, given: L.LightningDataModule | None
) -> L.LightningDataModule:
    """A datamodule no fold has touched: built from the config, or a copy of ``given``."""
    if given is None:
        return _runner.build_datamodule(cfg)
    return copy.deepcopy(given)


def _fold_config(cfg: DictConfig, folder: Path, **settings: Any) -> DictConfig:
    fold_cfg = copy.deepcopy(cfg)
    with open_dict(fold_cfg):
        fold_cfg.mode = "train"
        fold_cfg.ckpt_path = None
        fold_cfg.output_dir = str(folder)
        for key, value in settings.items():
            OmegaConf.update(fold_cfg, key, value, force_add=True)
    return fold_cfg


def _predict_test_rows(run: Any, rows: np.ndarray) -> pd.DataFrame:
    """The fold's model on the fold's test rows, as the datamodule's ``fold_predictions``
    describes them (a ``row`` column first)."""
    datamodule = run.datamodule
    datamodule.use_test_for_predict()
    # a trainer of its own: the run's one would set its datamodule up for predict_path
    trainer = L.Trainer(
        accelerator=run.trainer.accelerator,
        devices=1,
        precision=run.trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    batches = trainer.predict(run.task, dataloaders=datamodule.predict_dataloader())
    return datamodule.fold_predictions(_runner._collate_predictions(batches), rows)


def _run_fold(
    cfg: DictConfig,
    given: L.LightningDataModule | None,
    fold: Fold,
    console: bool,
) -> dict[str, Any]:
    """Train, test and predict one fold into its folder; its ``summary.json``."""
    if fold.folder.exists():  # an interrupted or failed try: start the fold again
        shutil.rmtree(fold.folder)
    fold_cfg = _fold_config(cfg, fold.folder)
    datamodule = _fresh_datamodule(cfg, given)
    datamodule.use_fold(fold.train_rows, fold.test_rows)
    run = _runner._prepare(fold_cfg, datamodule, console)
    _runner._train(run)
    if run.trainer.is_global_zero:
        oof = _predict_test_rows(run, fold.test_rows)
        run.artifacts.append(write_csv(oof, fold.folder / "oof.csv", index=False))
        _runner._record_history(run)
    run.summary["cv_fold"] = {
        "repeat": fold.repeat,
        "fold": fold.fold,
        "train_rows": len(fold.train_rows),
        "test_rows": len(fold.test_rows),
    }
    return _runner._finish(run)


# -- the summary -------------------------------------------------------------------------
def describe(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the t-based 95% interval of the mean (the
    finite ``values``; NaN/infinite ones are kept in ``values`` as None)."""
    from scipy import stats

    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    mean = float(np.mean(finite)) if n else None
    std = float(np.std(finite, ddof=1)) if n > 1 else None
    low = high = mean
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    shown = [float(v) if v is not None and math.isfinite(v) else None for v in values]
    return {"mean": mean, "std": std, "ci95_low": low, "ci95_high": high, "values": shown}


def save_scores_plot(results: pd.DataFrame, metrics: list[str], path: Path) -> Path | None:
    """Each metric's per-fold scores as points, with their mean as a line."""
    from tasks._files import save_figure
    from tasks._plots import _pyplot

    if not metrics:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(4.0, 3.2 * len(metrics)), 3.6), squeeze=False
    )
    labels = [
        f"{f}" if results["repeat"].nunique() == 1 else f"{r}.{f}"
        for r, f in zip(results["repeat"], results["fold"])
    ]
    for ax, metric in zip(axes[0], metrics):
        values = results[metric].to_numpy(dtype=float)
        ax.plot(range(len(values)), values, "o", color="tab:blue")
        finite = values[np.isfinite(values)]
        if len(finite):
            ax.axhline(finite.mean(), color="tab:orange", label=f"mean {finite.mean():.4g}")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(values)), labels, fontsize=7)
        ax.set_xlabel("fold" if results["repeat"].nunique() == 1 else "repeat.fold")
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _write_results(
    output_dir: Path,
    plan: list[Fold],
    summaries: list[dict[str, Any]],
    options: Options,
    strategy: str,
    n_rows: int,
) -> dict[str, Any]:
    records = [
        {"fold": f.fold, "repeat": f.repeat, **(s.get("metrics") or {})}
        for f, s in zip(plan, summaries)
    ]
    results = pd.DataFrame.from_records(records)
    metrics = [c for c in results.columns if c not in ("fold", "repeat")]
    write_csv(results, output_dir / "cv_results.csv", index=False)
    oof = pd.concat(
        [pd.read_csv(f.folder / "oof.csv").assign(repeat=f.repeat, fold=f.fold) for f in plan],
        ignore_index=True,
    )
    head = ["row", *(["repeat"] if options.repeats > 1 else []), "fold"]
    oof = oof.sort_values(["repeat", "row"], kind="stable")
    oof = oof[head + [c for c in oof.columns if c not in ("row", "repeat", "fold")]]
    write_csv(oof, output_dir / "oof_predictions.csv", index=False)
    epochs = [s.get("best_epoch") for s in summaries]
    summary = {
        "folds": options.folds,
        "repeats": options.repeats,
        "strategy": strategy,
        "groups": options.groups,
        "rows": n_rows,
        "metrics": {m: describe(results[m].tolist()) for m in metrics},
        "best_epochs": epochs,
        "fold_dirs": [str(f.folder) for f in plan],
    }
    summary.update(_peers_on_the_folds(summaries))
    write_json(output_dir / "cv_summary.json", summary)
    save_scores_plot(results, metrics, output_dir / "cv_scores.png")
    return summary


def _peers_on_the_folds(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The peers' scores on the same folds (each fold's peer check), described as the
    network's are, and the CV's verdict on the metric the checks compare."""
    from tasks.peers import LOWER_IS_BETTER, verdict

    keys = sorted({k for s in summaries for k in (s.get("peers") or {})})
    if not keys:
        return {}
    peers = {k: describe([(s.get("peers") or {}).get(k) for s in summaries]) for k in keys}
    out: dict[str, Any] = {"peers": peers}
    metric = next((s["peer_metric"] for s in summaries if s.get("peer_metric")), None)
    ranked = {  # peers scored on every fold: a mean over fewer folds is another average
        k.split("/")[1]: v["mean"]
        for k, v in peers.items()
        if k.endswith(f"/{metric}") and None not in v["values"] and v["mean"] is not None
    }
    network = [(s.get("metrics") or {}).get(f"test/{metric}") for s in summaries]
    if metric and ranked and all(v is not None for v in network):
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        best = max(ranked, key=lambda n: sign * ranked[n])
        mean = describe(network)["mean"]
        out["best_peer"] = best
        out["peer_check"] = "over the folds, " + verdict(
            metric, best, ranked[best], {f"test/{metric}": mean}
        )
    return out


def _refit(
    cfg: DictConfig,
    given: L.LightningDataModule | None,
    output_dir: Path,
    n_rows: int,
    epochs: list[int],
    console: bool,
) -> dict[str, Any]:
    """Train on every row (no test split) for the median of the folds' best epochs."""
    folder = output_dir / "refit"
    done = _read_json(folder / "summary.json")
    if done and done.get("status") == "completed":
        return done
    if folder.exists():
        shutil.rmtree(folder)
    max_epochs = max(1, int(round(statistics.median(epochs)))) if epochs else None
    settings = {"trainer.max_epochs": max_epochs} if max_epochs else {}
    refit_cfg = _fold_config(cfg, folder, **settings)
    datamodule = _fresh_datamodule(cfg, given)
    datamodule.use_fold(np.arange(n_rows), np.arange(0))
    run = _runner._prepare(refit_cfg, datamodule, console)
    trainer = run.trainer
    _runner._fit(trainer, run.task, datamodule, None, run.summary, folder, run.started)
    callback = trainer.checkpoint_callback
    last = getattr(callback, "last_model_path", "") or None
    run.summary.update(
        {
            "cv_refit": {"max_epochs": trainer.max_epochs, "fold_best_epochs": epochs},
            "epochs": trainer.current_epoch,
            "max_epochs": trainer.max_epochs,
            "global_step": trainer.global_step,
            "final_checkpoint": last if last and Path(last).is_file() else None,
            "best_checkpoint": getattr(callback, "best_model_path", "") or None,
            "fit_metrics": _runner._scalar_metrics(trainer.callback_metrics),
        }
    )
    if trainer.is_global_zero:
        _runner._record_history(run)
    return _runner._finish(run)


def _partial(
    cfg: DictConfig,
    output_dir: Path,
    mine: list[dict[str, Any]],
    done: int,
    total: int,
    started: float,
) -> dict[str, Any]:
    """What a ``cv.fold`` job returns while other folds are still missing: its folds'
    mean metrics and how far the CV is."""
    say(
        f"cross-validation in {output_dir}: {done} of {total} folds completed; the job that "
        "completes the last one writes cv_results.csv and cv_summary.json (or run the same "
        "command without cv.fold to run the missing folds)"
    )
    metrics: dict[str, Any] = {}
    for name in sorted({k for s in mine for k in (s.get("metrics") or {})}):
        values = [s["metrics"][name] for s in mine if name in (s.get("metrics") or {})]
        metrics[name] = describe(values)["mean"]
    return {
        "preset": _runner._preset_name(cfg),
        "mode": "cv",
        "status": "completed",
        "metrics": metrics,
        "cv": {"folds_completed": done, "folds_planned": total},
        "output_dir": str(output_dir),
        "wall_time_s": round(time.time() - started, 3),
    }


# -- the mode ----------------------------------------------------------------------------
def _cv_folder(cfg: DictConfig) -> Path:
    """The CV folder: ``output_dir`` (resumed when it holds an earlier CV), else a new one."""
    output_dir = _runner._output_dir(cfg)
    marker = previous_run(output_dir)
    if cfg.get("output_dir") and marker is not None:
        earlier = output_dir / "config.yaml"
        mode = OmegaConf.load(earlier).get("mode") if earlier.is_file() else None
        if mode != "cv":
            raise ConfigError(
                f"output_dir={output_dir} already holds a run that is not a cross-validation "
                f"({marker} is there); choose a new folder"
            )
    ensure_folder(output_dir, "output_dir")
    return output_dir


def run_cv(
    cfg: DictConfig, datamodule: L.LightningDataModule | None = None, console: bool = False
) -> dict[str, Any]:
    """Cross-validate ``cfg``'s preset (``mode=cv``, settings in ``cv``).

    Args:
        cfg: A composed config with ``mode=cv``.
        datamodule: A datamodule built in Python, copied (never set up) for every fold.
        console: The CLI prints its own closing block (Lightning's test tables are skipped).

    Returns:
        The CV's summary: ``metrics`` (each test metric's mean over the folds), ``cv``
        (what ``cv_summary.json`` holds) and where the files are.

    Raises:
        ConfigError: bad ``cv`` settings, ``ckpt_path`` set, or a datamodule that does not
            support cross-validation.
    """
    started = time.time()
    options = read_options(cfg)
    if cfg.get("ckpt_path") not in (None, ""):
        raise ConfigError("mode=cv trains every fold from scratch: drop ckpt_path")
    _runner._section(cfg, "task")
    _runner.check_trainer_arguments(_runner._container(cfg.trainer))  # before data is read
    if datamodule is not None and getattr(datamodule, "train_data", None) is not None:
        raise ConfigError(
            "mode=cv copies the datamodule for every fold: pass one that was not set up yet"
        )
    probe = _fresh_datamodule(cfg, datamodule)
    if not callable(getattr(probe, "cv_rows", None)):
        raise ConfigError(
            f"mode=cv: {type(probe).__name__} does not support cross-validation (it implements "
            "no cv_rows()); use mode=train, or see docs/evaluation.md#cross-validation"
        )
    rows = probe.cv_rows(options.groups)
    del probe
    strategy = choose_strategy(options, rows)
    output_dir = _cv_folder(cfg)
    if not cfg.get("preset") and _runner._preset_name(cfg):
        with open_dict(cfg):
            cfg.preset = _runner._preset_name(cfg)
    plan = [
        Fold(r, k, train, test, fold_folder(output_dir, r, k, options.repeats))
        for r, k, train, test in make_splits(strategy, options, rows, int(cfg.seed))
    ]
    folds = _assignment(plan)
    _check_same_folds(output_dir / "cv_folds.csv", folds)
    _runner._write_config(cfg, output_dir)
    write_csv(folds, output_dir / "cv_folds.csv", index=False)
    say(
        f"cross-validation: {options.folds} {strategy} folds"
        + (f" x {options.repeats} repeats" if options.repeats > 1 else "")
        + f" of {rows.n_rows} rows, in {output_dir}"
    )
    summaries: list[dict[str, Any] | None] = []
    mine: list[dict[str, Any]] = []
    chosen = options.chosen
    for fold in plan:
        if chosen is not None and fold.fold not in chosen:  # another job's: read after ours
            summaries.append(None)
            continue
        name = fold.folder.relative_to(output_dir)
        summary = _completed(fold.folder)
        if summary is not None:
            say(f"{name}: already completed, kept")
        else:
            summary = _run_fold(cfg, datamodule, fold, console)
        scores = ", ".join(f"{k} {v:.4g}" for k, v in (summary.get("metrics") or {}).items())
        say(f"{name}: {scores or 'no test metrics'}")
        summaries.append(summary)
        mine.append(summary)
    if chosen is not None:  # other jobs' folds may have completed while this one trained
        summaries = [
            s if f.fold in chosen else _completed(f.folder) for f, s in zip(plan, summaries)
        ]
    done = sum(s is not None for s in summaries)
    if done < len(plan):  # cv.fold: the other folds are other jobs' (or still to run)
        return _partial(cfg, output_dir, mine, done, len(plan), started)
    cv_summary = _write_results(output_dir, plan, summaries, options, strategy, rows.n_rows)
    for metric, stats in cv_summary["metrics"].items():
        if stats["mean"] is not None:
            spread = f" +- {stats['std']:.4g}" if stats["std"] is not None else ""
            say(f"cv {metric}: {stats['mean']:.4g}{spread} ({len(plan)} folds)")
    if cv_summary.get("peer_check"):
        say(f"peer check: {cv_summary['peer_check']}")
    result: dict[str, Any] = {
        "preset": _runner._preset_name(cfg),
        "mode": "cv",
        "status": "completed",
        "metrics": {m: s["mean"] for m, s in cv_summary["metrics"].items()},
        "cv": cv_summary,
        "output_dir": str(output_dir),
    }
    if options.refit and chosen is not None:
        say("cv.refit: run the same command without cv.fold to train the final model")
    elif options.refit:
        epochs = [int(e) for e in cv_summary["best_epochs"] if e]
        refit = _refit(cfg, datamodule, output_dir, rows.n_rows, epochs, console)
        result["refit"] = {
            "output_dir": str(output_dir / "refit"),
            "max_epochs": (refit.get("cv_refit") or {}).get("max_epochs"),
            "final_checkpoint": refit.get("final_checkpoint"),
        }
        cv_summary["refit"] = result["refit"]
        write_json(output_dir / "cv_summary.json", cv_summary)
    result["wall_time_s"] = round(time.time() - started, 3)
    return result
