"""The data doctor: read a preset's data exactly as its datamodule does, train nothing, and
report what looks wrong (leaks, duplicates across splits, tiny classes, drift, corrupt
images, gaps in a series...), each finding with its severity and the option that changes it.

``python -m tasks doctor +task=PRESET [overrides] [--strict] [--out DIR]`` writes
``doctor.md`` and ``doctor.json``; :func:`diagnose_datamodule` gives the same findings for a
datamodule that is already set up (the start of every training run).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.errors import ConfigError, UserError

if TYPE_CHECKING:
    from lightning import LightningDataModule
    from omegaconf import DictConfig

SEVERITIES = ("error", "warning", "info")
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}

#: fewer values than this, and a statistic says too little to report anything
MIN_ROWS = 20
#: a feature column empty in at least this share of the rows is mostly missing
MOSTLY_MISSING = 0.5
#: largest-to-smallest training class: a note from the first ratio, a warning from the second
IMBALANCE = (3.0, 10.0)
#: a feature predicts the target "nearly perfectly" when it is wrong in at most this share of
#: rows and in at most ``NEAR_LEAK_GAIN`` of the rows the majority class gets wrong
NEAR_LEAK_ERRORS = 0.01
NEAR_LEAK_GAIN = 0.1
#: |Pearson correlation| above which a numeric feature is a copy of a regression target
LEAK_CORRELATION = 0.99
#: drift of a test/predict file: the standardised mean shift must reach this and stand
#: ``DRIFT_SE`` standard errors clear of sampling noise ...
DRIFT_SHIFT = 0.5
DRIFT_SE = 4.0
#: ... or at least this many values (and share) must lie outside the training range
DRIFT_OUTSIDE = 5
DRIFT_OUTSIDE_SHARE = 0.05
#: near-duplicate images: 8x8 average hashes at most this many bits apart, whose 8x8
#: thumbnails also differ by at most this much on average (0-255 scale)
HASH_BITS = 2
THUMB_DIFF = 6.0
#: test tokens that are unknown to the training vocabulary, above which coverage is poor
UNKNOWN_TOKENS = 0.1
#: a run of equal values in a series is a stretch from this length, and from
#: ``STRETCH_FACTOR`` times the 99th percentile of the series' own runs
MIN_STRETCH = 8
STRETCH_FACTOR = 3.0
#: a step longer than this many usual steps is a gap; more gaps than ``IRREGULAR`` of the
#: steps and the series is irregular rather than gappy
GAP_FACTOR = 1.5
IRREGULAR = 0.1
#: caps that keep the doctor to seconds on large data
MAX_COLUMNS = 500
MAX_IMAGES = 100_000
MAX_FILES = 20_000
MAX_PAIRS = 2_000_000
MAX_TEXTS = 200_000
SHOWN = 5


@dataclass
class Finding:
    """One thing the doctor found.

    Attributes:
        severity: ``error`` (training cannot run), ``warning`` (it runs, but its scores or
            model are suspect) or ``info`` (worth knowing).
        what: One line naming the column, file or rows and the problem.
        option: The setting that changes it (e.g. ``datamodule.drop_columns=[id]``), or None.
        kind: A short machine-readable code, e.g. ``leak`` or ``cross_split_duplicates``.
    """

    severity: str
    what: str
    option: str | None = None
    kind: str = "other"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


@dataclass
class Report:
    """What the doctor found (:class:`Finding` s) and what it measured (``facts``: sizes,
    per-column type, role and missing share, class balance...), as plain data."""

    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, severity: str, kind: str, what: str, option: str | None = None) -> None:
        """Append a finding."""
        self.findings.append(Finding(severity, what, option, kind))

    def of(self, severity: str) -> list[Finding]:
        """The findings of one severity."""
        return [f for f in self.findings if f.severity == severity]

    @property
    def can_train(self) -> bool:
        """Whether training can run (no finding is an error)."""
        return not self.of("error")

    def exit_code(self, strict: bool = False) -> int:
        """2 when training cannot run, 1 with ``strict`` when there are warnings, else 0."""
        if self.of("error"):
            return 2
        return 1 if strict and self.of("warning") else 0

    def summary_line(self) -> str:
        """``1 error, 2 warnings, 3 notes`` (or ``no findings``)."""
        counts = [(len(self.of(s)), s if s != "info" else "note") for s in SEVERITIES]
        parts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in counts if n]
        return ", ".join(parts) if parts else "no findings"

    def to_dict(self) -> dict[str, Any]:
        """``{"findings": [{severity, what, option, kind}], "facts": {...}}`` (plain data)."""
        return {
            "findings": [
                {"severity": f.severity, "what": f.what, "option": f.option, "kind": f.kind}
                for f in self.findings
            ],
            "facts": _plain(self.facts),
        }

    def lines(self) -> list[str]:
        """The short report: one line per finding, errors first, then the summary."""
        ordered = sorted(self.findings, key=lambda f: SEVERITIES.index(f.severity))
        out = [f"{f.severity}: {f.what}" + (f" [{f.option}]" if f.option else "") for f in ordered]
        return [*out, f"data doctor: {self.summary_line()}"]


# -- running it ---------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    """A user error as one line (OmegaConf errors name the missing config key)."""
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(exc, MissingMandatoryValue) and getattr(exc, "full_key", None):
        return f"missing value for {exc.full_key}: set it with {exc.full_key}=VALUE"
    return " ".join(str(exc).split()) or type(exc).__name__


def _user_errors() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import OmegaConfBaseException

    return (UserError, OmegaConfBaseException)


def diagnose(cfg: DictConfig) -> Report:
    """Build the config's datamodule, read and preprocess its data as ``mode=train`` does
    (``prepare_data`` and ``setup("fit")``: nothing is trained), and inspect it.

    Args:
        cfg: A composed config (:func:`tasks.api.compose`).

    Returns:
        The report. A datamodule that cannot be built or set up (a ``UserError``) is an
        ``error`` finding; the checks that can still run on the raw data follow it.
    """
    from tasks.engine.runner import build_datamodule

    report = Report()
    report.facts["preset"] = cfg.get("preset")
    try:
        datamodule = build_datamodule(cfg)
    except _user_errors() as exc:
        report.add("error", "setup_failed", f"the datamodule cannot be built: {_one_line(exc)}")
        return report
    set_up = _set_up(datamodule, report)
    _inspect(datamodule, cfg, report, set_up)
    return report


def diagnose_datamodule(datamodule: LightningDataModule, cfg: DictConfig | None = None) -> Report:
    """The doctor's findings for a datamodule that ``setup("fit")`` has already filled (the
    runner calls it at the start of ``mode=train``). It reads the raw files again where the
    datamodule keeps only tensors, and caps its expensive checks: seconds on 100k rows.

    Args:
        datamodule: A set-up datamodule (a built-in one, or any ``BaseDataModule``).
        cfg: The run's config (for the preset's name and the task's options), or None.
    """
    report = Report()
    if cfg is not None:
        report.facts["preset"] = cfg.get("preset")
    set_up = getattr(datamodule, "train_data", None) is not None
    _inspect(datamodule, cfg, report, set_up)
    return report


def _set_up(datamodule: Any, report: Report) -> bool:
    """``prepare_data`` and ``setup("fit")``; a user error becomes an error finding. The
    warnings they raise are kept in the facts (the findings say the same in more detail)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            datamodule.prepare_data()
            datamodule.setup("fit")
            ok = True
        except _user_errors() as exc:
            report.add(
                "error", "setup_failed", f"training cannot run: {_one_line(exc)}", _option_in(exc)
            )
            ok = False
    seen = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    if seen:
        report.facts["setup_warnings"] = seen[:20]
    return ok


def _option_in(exc: BaseException) -> str | None:
    """The ``datamodule.X`` option an error message tells the user to set, if any."""
    import re

    found = re.findall(r"datamodule\.[a-z_]+", str(exc))
    return found[-1] if found else None


def _inspect(datamodule: Any, cfg: Any, report: Report, set_up: bool) -> None:
    from datamodules.chars import CharDataModule
    from datamodules.forecast import ForecastDataModule
    from datamodules.image import ImageDataModule
    from datamodules.sequence import SequenceDataModule
    from datamodules.series import SeriesDataModule
    from datamodules.tabular import TabularDataModule
    from datamodules.text import TextDataModule

    report.facts["datamodule"] = type(datamodule).__name__
    report.facts["set_up"] = set_up
    inspectors: list[tuple[type, Callable[..., None]]] = [
        (TabularDataModule, _inspect_table),
        (ImageDataModule, _inspect_images),
        (TextDataModule, _inspect_texts),
        (SeriesDataModule, _inspect_series),
        (ForecastDataModule, _inspect_forecast),
        (SequenceDataModule, _inspect_sequences),
        (CharDataModule, _inspect_chars),
    ]
    started = time.perf_counter()
    for cls, inspect in inspectors:
        if isinstance(datamodule, cls):
            inspect(_Context(datamodule, cfg, report, set_up))
            break
    else:
        _sizes(datamodule, report)
        report.add(
            "info",
            "not_inspected",
            f"{type(datamodule).__name__} is not a built-in datamodule: only its split sizes "
            "were checked",
        )
    report.facts["seconds"] = round(time.perf_counter() - started, 3)


@dataclass
class _Context:
    dm: Any
    cfg: Any
    report: Report
    set_up: bool

    @property
    def hp(self) -> Any:
        return self.dm.hparams

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[None]:
        """Run one check; a failure is noted in the facts and never stops the others (the
        doctor runs at the start of training, which it must never break)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the datamodule warned once already
                yield
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            skipped = self.report.facts.setdefault("checks_not_run", {})
            reason = _one_line(exc)
            if not isinstance(exc, _user_errors()):
                reason = f"{type(exc).__name__}: {reason}"
            skipped[name] = reason[:300]

    def task_accepts(self, option: str) -> bool:
        """Whether the config's task takes constructor argument ``option``."""
        try:
            from tasks.engine import registry as _registry
            from tasks.engine.runner import accepted_arguments

            accepted = accepted_arguments(_registry.load("task", str(self.cfg.task._name_)))
        except Exception:  # noqa: BLE001 - no config, or no such task: no advice
            return False
        return accepted is None or option in accepted


# -- plain data -----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """numpy scalars and arrays, tuples, paths as plain JSON-ready Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _listed(values: Sequence[Any], n: int = SHOWN) -> str:
    values = list(values)
    more = f" and {len(values) - n} more" if len(values) > n else ""
    return ", ".join(str(v) for v in values[:n]) + more


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _quote(value: Any) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value if not isinstance(value, str) or len(value) <= 40 else value[:37] + "...")


def _stats(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {}
    q = np.quantile(values, [0.0, 0.5, 0.95, 1.0])
    return {"min": q[0], "median": q[1], "p95": q[2], "max": q[3], "mean": values.mean()}


def _sizes(dm: Any, report: Report) -> dict[str, int]:
    sizes = {}
    for split in SPLITS:
        data = getattr(dm, f"{split}_data", None)
        if data is not None and len(data) and hasattr(data[0], "__len__"):
            sizes[split] = len(data[0])
    report.facts["sizes"] = sizes
    return sizes


# -- classes --------------------------------------------------------------------------------------
def _class_checks(
    ctx: _Context, names: Sequence[str], counts: dict[str, np.ndarray], unit: str = "rows"
) -> None:
    """Class balance facts, classes too small for the splits, and imbalance."""
    report = ctx.report
    names = [str(n) for n in names]
    counts = {s: np.asarray(c, dtype=np.int64) for s, c in counts.items() if c is not None}
    report.facts["classes"] = {
        name: {split: int(c[i]) for split, c in counts.items()} for i, name in enumerate(names)
    }
    splits = [s for s, c in counts.items() if c.sum() > 0]
    total = sum(counts[s] for s in splits) if splits else np.zeros(len(names), np.int64)
    small = []
    for i, name in enumerate(names):
        absent = [SPLIT_NAMES.get(s, s) for s in splits if counts[s][i] == 0]
        if absent:
            shown = ", ".join(f"{s} {int(counts[s][i])}" for s in splits)
            small.append(
                f"class {name!r} has {int(total[i])} {unit} ({shown}): none in the "
                f"{' and '.join(absent)} split{'s' if len(absent) > 1 else ''}, so its "
                "scores there are missing"
            )
    if len(small) > 3:
        report.add(
            "warning",
            "class_too_small",
            f"{len(small)} of {len(names)} classes are missing from a split: "
            + "; ".join(small[:3])
            + "; ...; add rows or merge rare classes",
        )
    else:
        for line in small:
            report.add("warning", "class_too_small", line + "; add rows or merge it with another")
    train = counts.get("train")
    if train is None or (train > 0).sum() < 2:
        return
    present = train[train > 0]
    ratio = float(present.max() / present.min())
    report.facts["imbalance_ratio"] = round(ratio, 2)
    if ratio < IMBALANCE[0]:
        return
    big = names[int(np.argmax(train))]
    tiny = names[int(np.flatnonzero(train == present.min())[0])]
    option = "task.class_weights=balanced" if ctx.task_accepts("class_weights") else None
    report.add(
        "warning" if ratio >= IMBALANCE[1] else "info",
        "imbalance",
        f"the training classes are imbalanced {ratio:.0f}:1 (largest {big!r}: "
        f"{int(present.max())} {unit}, smallest {tiny!r}: {int(present.min())}): accuracy "
        "favours the large classes; judge by balanced accuracy or F1",
        option,
    )


def _label_counts(data: Any, n_classes: int) -> np.ndarray | None:
    if data is None:
        return None
    import torch

    y = data[-1]
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.dtype != torch.long:
        return None
    return torch.bincount(y, minlength=n_classes).numpy()[:n_classes]


# -- tables ---------------------------------------------------------------------------------------
def _row_hashes(frame: pd.DataFrame, numeric: Collection[str] = ()) -> np.ndarray:
    """A 64-bit hash per row of ``frame``, equal for equal values whatever the file's dtypes:
    numeric-typed columns (and ``numeric``) as floats, every other column as its category
    text (``10115.0`` is ``10115``, as the preprocessor reads categories)."""
    from datamodules._table_prep import category_text

    columns = {}
    for col in frame.columns:
        series = frame[col]
        if col in numeric or (
            pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        ):
            columns[col] = _numbers(series)
        else:
            columns[col] = category_text(series).astype(str)
    normalised = pd.DataFrame(columns, index=frame.index)
    return pd.util.hash_pandas_object(normalised, index=False).to_numpy()


def _numbers(series: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series):
        return series.astype(float).to_numpy()
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _class_leak(feature: pd.Series, target: pd.Series, numeric: bool) -> str | None:
    """How ``feature`` gives the class away, or None: each of its few values maps to one
    class (or nearly every row's does), or, for a numeric feature, thresholds split the
    sorted values into one block per class."""
    present = feature.notna().to_numpy()
    x, y = feature[present], target[present]
    n = len(x)
    y_codes, classes = pd.factorize(y.to_numpy())
    k = len(classes)
    if n < MIN_ROWS or k < 2:
        return None
    x_codes, values = pd.factorize(x.to_numpy())
    distinct = len(values)
    if distinct <= max(20, 0.05 * n) and distinct < n:
        table = np.bincount(x_codes * k + y_codes, minlength=distinct * k).reshape(distinct, k)
        agree = int(table.max(axis=1).sum())
        errors, baseline = n - agree, n - int(np.bincount(y_codes).max())
        if errors == 0:
            return f"each of its {distinct} values goes with a single class"
        if errors <= NEAR_LEAK_ERRORS * n and errors <= NEAR_LEAK_GAIN * baseline:
            return f"its {distinct} values give the class in {agree / n:.1%} of rows"
        return None
    if numeric and n >= 50:
        numbers = _numbers(x)
        order = np.argsort(numbers, kind="stable")
        ordered, labels = numbers[order], y_codes[order]
        changes = np.flatnonzero(np.diff(labels) != 0)
        # one block per class, and no tied value on both sides of a boundary
        if len(changes) == k - 1 and (ordered[changes] != ordered[changes + 1]).all():
            return "thresholds on it separate every class perfectly"
    return None


def _regression_leak(feature: pd.Series, target: pd.Series, numeric: bool) -> str | None:
    """How ``feature`` gives a numeric target away, or None: correlation above
    ``LEAK_CORRELATION``, or few values whose group means explain nearly all its variance."""
    y = _numbers(target)
    x_series = feature
    ok = feature.notna().to_numpy() & np.isfinite(y)
    if ok.sum() < MIN_ROWS or np.nanstd(y[ok]) == 0:
        return None
    if numeric:
        x = _numbers(feature)
        ok &= np.isfinite(x)
        if ok.sum() >= MIN_ROWS and np.std(x[ok]) > 0:
            r = float(np.corrcoef(x[ok], y[ok])[0, 1])
            if abs(r) > LEAK_CORRELATION:
                return f"its correlation with the target is {r:.4f}"
    distinct = x_series[ok].nunique()
    if 1 < distinct <= max(20, 0.05 * ok.sum()):
        groups = pd.Series(y[ok]).groupby(x_series[ok].to_numpy()).transform("mean").to_numpy()
        explained = 1 - np.var(y[ok] - groups) / np.var(y[ok])
        if explained > LEAK_CORRELATION**2:
            return f"its {distinct} values explain {explained:.2%} of the target's variance"
    return None


def _inspect_table(ctx: _Context) -> None:
    from datamodules._table_prep import category_text, column_roles, resolve_column_types
    from datamodules.base import split_indices

    dm, hp, report = ctx.dm, ctx.hp, ctx.report
    state: dict[str, Any] = {}
    with ctx.check("read the table"):
        # the datamodule keeps no copy of the raw rows: read them as its setup does
        frame, targets, where = dm._labelled_frame()
        features = dm._feature_columns(frame, targets, where)
        state.update(frame=frame, targets=targets, where=where, features=features)
    if not state:
        return
    frame, targets, where, features = (state[k] for k in ("frame", "targets", "where", "features"))
    classification = bool(dm.classification)
    split: dict[str, np.ndarray] = {}
    with ctx.check("splits"):
        test_fraction = 0.0 if hp.test_path is not None else hp.test_fraction
        stratify = frame[targets[0]].to_numpy() if classification else None
        parts = split_indices(len(frame), hp.val_fraction, test_fraction, hp.seed, stratify)
        if getattr(dm, "train_data", None) is not None and len(dm.train_data[0]) != len(parts[0]):
            raise RuntimeError("the recomputed split differs from the datamodule's")
        split = dict(zip(SPLITS, parts))
    sizes = {s: len(i) for s, i in split.items() if len(i)}
    report.facts["sizes"] = sizes
    train = frame.iloc[split["train"]] if split else frame

    # column types and roles: the fitted preprocessor's, else inferred as setup would
    prep = dm.prep.state if dm.prep.fitted else {}
    types: dict[str, str] = {}
    excluded: dict[str, str] = dict(prep.get("excluded", {}))
    if prep:
        for col in features:
            if col in prep.get("dates", {}):
                types[col] = "date"
            elif col in prep.get("categories", {}):
                types[col] = "categorical"
            elif col in prep.get("numeric", []):
                types[col] = "boolean" if pd.api.types.is_bool_dtype(frame[col]) else "numeric"
    else:
        with ctx.check("column types"):
            inferred = resolve_column_types(frame, features, hp.column_types, where)
            kept = {str(c) for c in hp.keep_columns}
            listed = set(features) if hp.features is not None else set()
            inferred, excluded = column_roles(
                train, features, inferred, set(hp.column_types or {}), kept | listed, len(frame)
            )
            types = {c: t for c, t in inferred.items() if c not in excluded}
    dropped = {str(c) for c in hp.drop_columns}
    distinct = {str(c): int(frame[c].nunique(dropna=False)) for c in frame.columns[:MAX_COLUMNS]}
    columns: dict[str, dict[str, Any]] = {}
    for col in frame.columns[:MAX_COLUMNS]:
        col = str(col)
        if col in targets:
            role = "target"
        elif col in excluded:
            role = "left out (identifier-like)"
        elif col in dropped:
            role = "dropped (drop_columns)"
        elif col not in features:
            role = "not a feature"
        else:
            role = "feature"
        if col in targets:
            kind = "classes" if classification else "numeric"
        else:
            kind = types.get(col) or (
                "numeric" if pd.api.types.is_numeric_dtype(frame[col]) else "text"
            )
        columns[col] = {
            "type": kind,
            "role": role,
            "missing_share": float(frame[col].isna().mean()),
            "distinct": distinct[col],
        }
    report.facts["columns"] = columns
    used = [c for c in features if c not in excluded]
    numeric = [c for c in used if types.get(c) in ("numeric", "boolean")]
    categorical = [c for c in used if types.get(c) == "categorical"]

    with ctx.check("identifiers and constants"):
        for col, reason in excluded.items():
            report.add(
                "warning",
                "id_like",
                f"{where}: column {col!r} {reason}; the datamodule leaves it out",
                f"datamodule.drop_columns=[{col}]",
            )
        for col in used:
            if distinct.get(col, 2) <= 1:
                value = frame[col].iloc[0]
                report.add(
                    "warning",
                    "constant",
                    f"{where}: column {col!r} holds one value ({_quote(value)}) in every row: "
                    "it carries no information",
                    f"datamodule.drop_columns=[{col}]",
                )

    with ctx.check("missing values"):
        partly = []
        for col in used:
            share = frame[col].isna().mean()
            if share >= MOSTLY_MISSING:
                report.add(
                    "warning",
                    "missing",
                    f"{where}: column {col!r} is empty in {share:.0%} of rows: what the model "
                    "learns from it rests on few rows",
                    f"datamodule.drop_columns=[{col}]",
                )
            elif share > 0:
                partly.append(f"{col} {share:.1%}")
        if partly:
            report.add(
                "info",
                "missing",
                f"{where}: {len(partly)} column(s) have empty cells ({_listed(partly)}): "
                "numbers are filled with the training median (plus a missing-indicator "
                "column), categories go to the unknown category",
            )

    with ctx.check("leaks"):
        for col in used[:MAX_COLUMNS]:
            if distinct.get(col, 2) <= 1:
                continue
            for target in targets:
                is_numeric = col in numeric
                leak = (
                    _class_leak(frame[col], frame[target], is_numeric)
                    if classification
                    else _regression_leak(frame[col], frame[target], is_numeric)
                )
                if leak:
                    report.add(
                        "warning",
                        "leak",
                        f"{where}: column {col!r} predicts the target {target!r} almost by "
                        f"itself ({leak}): a copy of the label or something known only after "
                        "it? If so, the scores are far better than the model will be",
                        f"datamodule.drop_columns=[{col}]",
                    )

    keys = None
    with ctx.check("duplicate rows"):
        if used:
            inputs = _row_hashes(frame[used], numeric)
            rows = _combine(inputs, _row_hashes(frame[targets]))
            keys = (inputs, rows)
            _table_duplicates(ctx, frame, inputs, rows, split, where, classification)

    if classification:
        with ctx.check("classes"):
            labels = frame[targets[0]]
            classes = sorted(pd.unique(labels).tolist(), key=lambda v: (str(type(v)), v))
            index = {c: i for i, c in enumerate(classes)}
            codes = labels.map(index).to_numpy()
            counts = {
                s: np.bincount(codes[idx], minlength=len(classes)) for s, idx in split.items()
            }
            if hp.test_path is not None:
                counts.pop("test", None)
            _class_checks(ctx, [str(c) for c in classes], counts)
    else:
        report.facts["target"] = {t: _stats(_numbers(frame[t])) for t in targets}

    with ctx.check("outliers"):
        for col in [*numeric, *([] if classification else targets)][:MAX_COLUMNS]:
            _column_outliers(ctx, frame[col], col, where, regression_target=col in targets)

    if split:
        with ctx.check("categories outside the training split"):
            rare = []
            for col in categorical:
                seen = set(category_text(train[col]).dropna())
                rest = np.concatenate([split["val"], split["test"]])
                values = category_text(frame[col].iloc[rest]).dropna()
                new = sorted(set(values) - seen)
                if new:
                    rare.append(f"{col}: {_listed(map(repr, new), 3)}")
            if rare:
                report.add(
                    "info",
                    "unseen_categories",
                    f"{where}: categories that occur only in validation/test rows, unknown to "
                    f"the model ({_listed(rare, 3)})",
                )

    for option in ("test_path", "predict_path"):
        path = hp.get(option)
        if path is None:
            continue
        with ctx.check(f"datamodule.{option}"):
            other = dm._read(path, f"datamodule.{option}")
            known = prep.get("categories") or {
                c: sorted(set(category_text(train[c]).dropna())) for c in categorical
            }
            seen = (keys[0][split["train"]], keys[1][split["train"]]) if keys and split else None
            _file_checks(
                ctx, f"datamodule.{option}", other, train, used, numeric, known, targets, seen
            )


def _combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One 64-bit key from two (wrapping arithmetic, as hash mixing does)."""
    with np.errstate(over="ignore"):
        return a ^ (b * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x7F4A7C15))


def _table_duplicates(
    ctx: _Context,
    frame: pd.DataFrame,
    inputs: np.ndarray,
    rows: np.ndarray,
    split: dict[str, np.ndarray],
    where: str,
    classification: bool,
) -> None:
    """Rows repeated within the table, inputs that disagree on the label, and validation or
    test rows that repeat a training row (inputs and target: its score is memory)."""
    from datamodules._table_prep import rows_text

    report = ctx.report
    repeated = pd.Series(rows).duplicated().to_numpy()
    report.facts["duplicate_rows"] = int(repeated.sum())
    if repeated.any():
        report.add(
            "info",
            "duplicate_rows",
            f"{where}: {_count(int(repeated.sum()), 'row')} "
            f"{'repeats' if repeated.sum() == 1 else 'repeat'} an earlier row exactly "
            f"({rows_text(frame, repeated)}): they weigh more in training",
        )
    if classification:
        groups = pd.DataFrame({"x": inputs, "row": rows}).groupby("x")["row"].nunique()
        conflicting = groups.index[groups > 1]
        if len(conflicting):
            mask = np.isin(inputs, conflicting.to_numpy())
            report.add(
                "info",
                "duplicate_rows",
                f"{where}: {len(conflicting)} set(s) of identical inputs have different labels "
                f"({rows_text(frame, mask)}): label noise, or a feature is missing",
            )
    if not split:
        return
    seen = np.unique(rows[split["train"]])
    found = []
    mask = np.zeros(len(frame), dtype=bool)
    for name in ("val", "test"):
        idx = split[name]
        copies = np.isin(rows[idx], seen)
        if copies.any():
            mask[idx[copies]] = True
            found.append(f"{int(copies.sum())} of {len(idx)} {SPLIT_NAMES[name]} rows")
    if found:
        report.add(
            "warning",
            "cross_split_duplicates",
            f"{where}: {' and '.join(found)} repeat a training row ({rows_text(frame, mask)}): "
            "their scores measure memory, not generalisation; drop the duplicates before "
            "splitting",
        )


def _column_outliers(
    ctx: _Context, series: pd.Series, col: str, where: str, regression_target: bool = False
) -> None:
    """Values far outside the bulk of a numeric column, by the datamodule's own rule
    (Tukey's far-out fences, on the log scale for skewed positive columns, isolated by a
    gap): a typo, a sentinel, a unit mistake."""
    from datamodules._table_prep import TAIL_SHARE, far_out, rows_text

    values = _numbers(series)
    present = np.isfinite(values)
    if present.sum() < MIN_ROWS:
        return
    flagged = np.zeros(len(values), dtype=bool)
    for mask, beyond in far_out(values[present]):
        if beyond <= TAIL_SHARE * present.sum() + 1:
            flagged[present] |= mask
    if not flagged.any():
        return
    shown = ", ".join(f"{v:g}" for v in values[flagged][:3])
    ctx.report.add(
        "warning",
        "outliers",
        f"{where}: column {col!r} has {int(flagged.sum())} value(s) far outside the rest "
        f"({shown}; median {np.median(values[present]):g}; {rows_text(series, flagged)}): "
        "typos, sentinels such as -999, or another unit?",
        "task.loss=huber" if regression_target and ctx.task_accepts("loss") else None,
    )


def _file_checks(
    ctx: _Context,
    where: str,
    other: pd.DataFrame,
    train: pd.DataFrame,
    used: list[str],
    numeric: list[str],
    categories: dict[str, list[str]],
    targets: list[str],
    seen: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """A test or predict file against the training split: unseen categories, numeric drift,
    cells empty there but never in training, rows that repeat training rows."""
    from datamodules._table_prep import category_text, rows_text

    report = ctx.report
    report.facts.setdefault("sizes", {})[where.removeprefix("datamodule.")] = len(other)
    shared = [c for c in used if c in other.columns]
    for col in [c for c in shared if c in categories][:MAX_COLUMNS]:
        values = category_text(other[col])
        unseen = values.notna().to_numpy() & ~values.isin(set(categories[col])).to_numpy()
        if unseen.any():
            examples = pd.unique(values[unseen])[:3]
            report.add(
                "warning",
                "unseen_categories",
                f"{where}: column {col!r} has categories never seen in training "
                f"({_listed(map(repr, examples), 3)}) in {int(unseen.sum())} of {len(other)} "
                f"rows ({rows_text(other, unseen)}): the model treats them as unknown",
            )
    drift = {}
    for col in [c for c in shared if c in numeric][:MAX_COLUMNS]:
        base, new = _numbers(train[col]), _numbers(other[col])
        base, gaps = base[np.isfinite(base)], ~np.isfinite(new)
        new = new[~gaps]
        if gaps.any() and train[col].notna().all():
            report.add(
                "warning",
                "missing",
                f"{where}: column {col!r} is empty in {_count(int(gaps.sum()), 'row')}, but "
                "never in training: the model fills them with the training median, a case it "
                "never saw",
            )
        if len(base) < MIN_ROWS or len(new) < 2 or np.std(base) == 0:
            continue
        shift = abs(new.mean() - base.mean()) / np.std(base)
        outside = int(((new < base.min()) | (new > base.max())).sum())
        share = outside / len(new)
        drift[col] = {"mean_shift_sd": round(float(shift), 3), "outside_range": round(share, 4)}
        noise = DRIFT_SE * math.sqrt(1 / len(new) + 1 / len(base))
        far = shift >= max(DRIFT_SHIFT, noise)
        wide = outside >= DRIFT_OUTSIDE and share >= max(
            DRIFT_OUTSIDE_SHARE, DRIFT_OUTSIDE * 2 / (len(base) + 1)
        )
        if far or wide:
            report.add(
                "warning",
                "drift",
                f"{where}: column {col!r} differs from training: mean {new.mean():g} vs "
                f"{base.mean():g} ({shift:.1f} training standard deviations), {share:.0%} of "
                f"values outside the training range [{base.min():g}, {base.max():g}]",
            )
    if drift:
        report.facts.setdefault("drift", {})[where] = drift
    if seen is not None and shared == used:
        theirs = _row_hashes(other[used], numeric)
        labelled = all(t in other.columns for t in targets)
        if labelled:
            theirs = _combine(theirs, _row_hashes(other[targets]))
        copies = np.isin(theirs, seen[1] if labelled else seen[0])
        if copies.any():
            report.add(
                "warning",
                "cross_split_duplicates",
                f"{where}: {int(copies.sum())} of {len(other)} rows repeat a training row"
                + ("" if labelled else "'s inputs")
                + f" ({rows_text(other, copies)}): "
                + ("their scores measure memory" if labelled else "the model has seen them"),
            )


# -- images ---------------------------------------------------------------------------------------
def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1)


def average_hash(images: Any) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 average hash of ``(N, C, H, W)`` uint8 images (bit set where the grey 8x8
    thumbnail is brighter than its mean) and their ``(N, C*64)`` thumbnails."""
    import torch
    import torch.nn.functional as F

    n = len(images)
    if not n:
        return np.zeros(0, np.uint64), np.zeros((0, 64), np.float32)
    channels = int(images.shape[1])
    hashes = np.empty(n, np.uint64)
    thumbs = np.empty((n, channels * 64), np.float32)
    weights = 1 << np.arange(63, -1, -1, dtype=np.uint64)
    # chunks of about 4 MB of float32, written into arrays made once: a small result kept
    # from every chunk would sit in the space the chunk freed and leave it unusable (a
    # list of per-chunk thumbnails of 70k images held 3 GB of fragmented heap)
    rows = max(1, 2**20 // max(1, int(np.prod(images.shape[1:]))))
    for start, chunk in zip(range(0, n, rows), images.split(rows)):
        small = F.adaptive_avg_pool2d(chunk.to(torch.float32), 8)
        grey = small.mean(dim=1).reshape(len(chunk), 64)
        bits = (grey > grey.mean(dim=1, keepdim=True)).numpy().astype(np.uint64)
        hashes[start : start + len(chunk)] = (bits * weights).sum(axis=1, dtype=np.uint64)
        thumbs[start : start + len(chunk)] = small.reshape(len(chunk), -1).numpy()
    return hashes, thumbs


def _thumbs_close(
    q_thumb: np.ndarray, b_thumb: np.ndarray, i: np.ndarray, j: np.ndarray
) -> np.ndarray:
    """Whether the thumbnails of each candidate pair ``(i[k], j[k])`` are within
    ``THUMB_DIFF``, compared 65,536 pairs at a time (two million candidate pairs of RGB
    thumbnails at once would take several GB)."""
    close = np.zeros(len(i), dtype=bool)
    for start in range(0, len(i), 65536):
        part = slice(start, start + 65536)
        diff = np.abs(q_thumb[i[part]] - b_thumb[j[part]]).mean(axis=1)
        close[part] = diff <= THUMB_DIFF
    return close


def near_duplicates(
    query: tuple[np.ndarray, np.ndarray], base: tuple[np.ndarray, np.ndarray]
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, one per query image ``i`` that nearly repeats a base image: ``j``
    is the first such base image found (hashes at most ``HASH_BITS`` apart, thumbnails
    close). Candidates come from a 3-block index of the hashes (two hashes 2 bits apart
    agree on one block at least), capped at ``MAX_PAIRS``. At most ``len(query)`` pairs
    are kept, whatever the number of matches (blank images can match millions)."""
    q_hash, q_thumb = query
    b_hash, b_thumb = base
    if not len(q_hash) or not len(b_hash):
        return []
    found = np.full(len(q_hash), -1, dtype=np.int64)  # the base image each query repeats

    def keep(i: np.ndarray, j: np.ndarray) -> None:
        new = found[i] < 0
        found[i[new][::-1]] = j[new][::-1]  # reversed: the first match of an image wins

    # equal hashes first, against one base image each (linear, whatever the repeats)
    first = pd.Series(np.arange(len(b_hash))).groupby(b_hash).first()
    match = first.reindex(q_hash).to_numpy()
    i = np.flatnonzero(~np.isnan(match))
    j = match[i].astype(np.int64)
    close = _thumbs_close(q_thumb, b_thumb, i, j)
    keep(i[close], j[close])
    budget = MAX_PAIRS
    for start, width in ((0, 22), (22, 21), (43, 21)):
        mask = np.uint64((1 << width) - 1)
        shift = np.uint64(64 - start - width)
        left = pd.DataFrame({"key": (q_hash >> shift) & mask, "i": np.arange(len(q_hash))})
        right = pd.DataFrame({"key": (b_hash >> shift) & mask, "j": np.arange(len(b_hash))})
        sizes = left.key.value_counts().mul(right.key.value_counts(), fill_value=0)
        if sizes.sum() > budget:  # very common blocks (near-blank images): skip those keys
            common = sizes.sort_values()
            keep = common.index[common.cumsum() <= budget]
            left, right = left[left.key.isin(keep)], right[right.key.isin(keep)]
        pairs = left.merge(right, on="key")
        budget -= len(pairs)
        if pairs.empty:
            continue
        i, j = pairs.i.to_numpy(), pairs.j.to_numpy()
        close = _popcount(q_hash[i] ^ b_hash[j]) <= HASH_BITS
        i, j = i[close], j[close]
        close = _thumbs_close(q_thumb, b_thumb, i, j)
        keep(i[close], j[close])
        if budget <= 0:
            break
    matched = np.flatnonzero(found >= 0)
    return list(zip(matched.tolist(), found[matched].tolist()))


def _inspect_images(ctx: _Context) -> None:
    from datamodules._disk_rows import head
    from datamodules.image import ImageFolderDataModule

    dm, report = ctx.dm, ctx.report
    files: dict[str, list[str]] | None = None
    if isinstance(dm, ImageFolderDataModule):
        with ctx.check("image files"):
            files = _image_folder(ctx)
    if not ctx.set_up:
        return
    sizes = _sizes(dm, report)
    data = {s: getattr(dm, f"{s}_data") for s in sizes}
    first = data["train"][0]
    report.facts["image_shape"] = list(first.shape[1:])
    with ctx.check("classes"):
        names = dm.fitted_state["class_names"]
        _class_checks(
            ctx, names, {s: _label_counts(d, len(names)) for s, d in data.items()}, "images"
        )
    with ctx.check("near-duplicate images"):
        hashed = {s: average_hash(head(d[0], MAX_IMAGES)) for s, d in data.items()}
        found, examples = [], []
        for split, other in (("val", "train"), ("test", "train"), ("test", "val")):
            if split not in hashed or other not in hashed:
                continue
            pairs = near_duplicates(hashed[split], hashed[other])
            if not pairs:
                continue
            count = len({i for i, _ in pairs})
            found.append(
                f"{count} of {sizes[split]} {SPLIT_NAMES[split]} images nearly repeat a "
                f"{SPLIT_NAMES[other]} image"
            )
            for i, j in pairs[:2]:
                if files:
                    examples.append(f"{files[split][i]} ~ {files[other][j]}")
                else:
                    examples.append(f"{split} image {i} ~ {other} image {j}")
        report.facts["near_duplicates"] = found
        if found:
            report.add(
                "warning",
                "near_duplicate_images",
                f"{'; '.join(found)} (8x8 average hashes at most {HASH_BITS} bits apart, e.g. "
                f"{', '.join(examples[:3])}): their scores measure memory, not generalisation",
            )


def _image_folder(ctx: _Context) -> dict[str, list[str]] | None:
    """Scan the files of an image folder (sizes, modes, unreadable ones), and the file of
    every image in each split where they can be matched to the datamodule's tensors."""
    from PIL import Image

    from datamodules.image import IMAGE_SUFFIXES

    hp, report = ctx.hp, ctx.report
    root = Path(hp.path)
    layout = [s for s in SPLITS if (root / s).is_dir()]
    trees = {s: root / s for s in layout} if "train" in layout else {"train": root}

    def listing(folder: Path) -> dict[str, list[Path]]:
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        return {
            c.name: sorted(
                p for p in c.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            for c in classes
        }

    if not root.is_dir():
        return None
    classes = {s: listing(folder) for s, folder in trees.items()}
    every = [p for tree in classes.values() for paths in tree.values() for p in paths]
    sizes: Counter = Counter()
    modes: Counter = Counter()
    bad: dict[Path, str] = {}
    for path in every[:MAX_FILES]:
        try:
            with Image.open(path) as image:
                sizes[(image.height, image.width)] += 1
                modes[image.mode] += 1
                image.verify()
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
            bad[path] = f"{type(exc).__name__}: {exc}"
    report.facts["image_files"] = {
        "files": len(every),
        "checked": min(len(every), MAX_FILES),
        "sizes": {f"{h}x{w}": n for (h, w), n in sizes.most_common(10)},
        "modes": dict(modes.most_common()),
        "unreadable": len(bad),
    }
    if bad:
        shown = [f"{p.relative_to(root)} ({why[:80]})" for p, why in bad.items()]
        skip = hp.on_corrupt == "skip"
        report.add(
            "warning" if skip else "error",
            "corrupt_image",
            f"datamodule.path={root}: {len(bad)} unreadable image file(s): {_listed(shown, 3)}; "
            + ("they are skipped" if skip else "training stops at them"),
            "datamodule.on_corrupt",
        )
    if len(sizes) > 1:
        (h0, w0), (h1, w1) = (
            min(sizes, key=lambda s: s[0] * s[1]),
            max(sizes, key=lambda s: s[0] * s[1]),
        )
        ratios = [w / h for h, w in sizes]
        stretch = max(ratios) / min(ratios)
        shape = f"{len(sizes)} different sizes, from {h0}x{w0} to {h1}x{w1} (height x width)"
        if hp.resize is None and not ctx.set_up:
            report.add(
                "error",
                "image_size",
                f"datamodule.path={root}: the images have {shape}; training needs one size",
                "datamodule.resize=[HEIGHT,WIDTH]",
            )
        else:
            note = f"; aspect ratios differ up to {stretch:.1f}x, so resizing distorts" * (
                stretch > 1.5
            )
            report.add(
                "info",
                "image_size",
                f"datamodule.path={root}: the images have {shape}; all are resized to "
                f"{_plain(hp.resize or ctx.dm.fitted_state.get('image_size'))}{note}",
                "datamodule.resize",
            )
    # the file behind each tensor row, split as the datamodule splits (checked by counts)
    if not ctx.set_up:
        return None
    from datamodules.base import split_indices

    names = list(classes["train"])
    kept: dict[str, list[Path]] = {}
    labels: dict[str, list[int]] = {}
    for split, tree in classes.items():
        ordered = [(p, i) for i, name in enumerate(names) for p in tree.get(name, [])]
        kept[split] = [p for p, _ in ordered if p not in bad]
        labels[split] = [i for p, i in ordered if p not in bad]
    has_val, has_test = "val" in kept, "test" in kept
    train_idx, val_idx, test_idx = split_indices(
        len(kept["train"]),
        0.0 if has_val else hp.val_fraction,
        0.0 if has_test else hp.test_fraction,
        hp.seed,
        stratify=np.asarray(labels["train"]),
    )
    train_files = kept["train"]
    out = {
        "train": [train_files[i] for i in train_idx],
        "val": kept["val"] if has_val else [train_files[i] for i in val_idx],
        "test": kept["test"] if has_test else [train_files[i] for i in test_idx],
    }
    for split, paths in out.items():
        data = getattr(ctx.dm, f"{split}_data", None)
        if (len(data[0]) if data is not None else 0) != len(paths):
            return None
    return {s: [str(p.relative_to(root)) for p in paths] for s, paths in out.items()}


# -- texts ----------------------------------------------------------------------------------------
def _normalised(texts: Sequence[str]) -> list[str]:
    return [" ".join(str(t).lower().split()) for t in texts]


def _raw_texts(dm: Any) -> dict[str, pd.DataFrame] | None:
    """The text sources as the datamodule reads them, empty texts kept: a copy of it with
    ``empty=keep`` (the datamodule keeps only the cleaned texts)."""
    settings = {**dict(dm.hparams), "empty": "keep", "max_chars": 10**12}
    clone = type(dm)(**settings)
    return clone._sources()


def _inspect_texts(ctx: _Context) -> None:
    dm, hp, report = ctx.dm, ctx.hp, ctx.report
    with ctx.check("empty texts"):
        # the datamodule keeps the cleaned texts only: read the sources again (capped)
        kept = sum(len(texts) for texts in dm.texts.values())
        raw = _raw_texts(dm) if kept <= MAX_TEXTS else {}
        for name, frame in raw.items():
            if name == "all":
                where = "datamodule.path"
            elif name == "test" and hp.test_path:
                where = "datamodule.test_path"
            else:
                where = f"datamodule.path ({name} rows)"
            empty = frame.text.str.strip().eq("").to_numpy()
            if empty.any():
                fate = {"drop": "dropped", "keep": "kept as one unknown token", "error": "refused"}
                report.add(
                    "warning",
                    "empty_text",
                    f"{where}: {int(empty.sum())} of {len(frame)} texts are empty (rows "
                    f"{_listed(frame.index[empty].tolist())}, counting from 0): "
                    f"{fate[hp.empty]} (datamodule.empty={hp.empty})",
                    "datamodule.empty",
                )
            long = frame.text.str.len() > hp.max_chars
            if long.any():
                report.add(
                    "info",
                    "long_text",
                    f"{where}: {int(long.sum())} texts are longer than max_chars="
                    f"{hp.max_chars} characters and are cut there",
                    "datamodule.max_chars",
                )
    if not ctx.set_up:
        return
    texts = {s: list(dm.texts.get(s, [])) for s in SPLITS if dm.texts.get(s)}
    report.facts["sizes"] = {s: len(t) for s, t in texts.items()}
    report.facts["lengths"] = {
        s: {
            "characters": _stats(np.array([len(x) for x in t], dtype=np.float64)),
            "words": _stats(np.array([len(x.split()) for x in t], dtype=np.float64)),
        }
        for s, t in texts.items()
    }
    with ctx.check("classes"):
        names = dm.class_names
        counts = {s: _label_counts(getattr(dm, f"{s}_data"), len(names)) for s in texts}
        _class_checks(ctx, names, counts, "texts")
    with ctx.check("duplicate texts"):
        keys = {s: _normalised(t[:MAX_TEXTS]) for s, t in texts.items()}
        train = keys.get("train", [])
        labels = getattr(dm, "train_data", None)
        labels = labels[-1].tolist() if labels is not None else [0] * len(train)
        repeated = pd.Series(train).duplicated()
        report.facts["duplicate_texts"] = int(repeated.sum())
        if repeated.any():
            groups = pd.DataFrame({"t": train, "y": labels[: len(train)]}).groupby("t")["y"]
            conflicting = int((groups.nunique() > 1).sum())
            note = f"; {conflicting} of them with different labels" if conflicting else ""
            report.add(
                "info",
                "duplicate_text",
                f"{int(repeated.sum())} of {len(train)} training texts repeat another "
                f"(ignoring case and spacing){note}: they weigh more in training",
            )
        seen = set(train)
        found, examples = [], []
        for split in ("val", "test"):
            copies = [i for i, key in enumerate(keys.get(split, [])) if key in seen]
            if copies:
                found.append(f"{len(copies)} of {len(keys[split])} {SPLIT_NAMES[split]} texts")
                examples += [_quote(texts[split][i]) for i in copies[:2]]
        if found:
            report.add(
                "warning",
                "cross_split_duplicates",
                f"{' and '.join(found)} also occur in the training split (ignoring case and "
                f"spacing; e.g. {', '.join(examples[:2])}): their scores measure memory, not "
                "generalisation; drop the duplicates before splitting",
            )
    with ctx.check("vocabulary coverage"):
        evaluated = texts.get("test") or texts.get("val") or []
        if evaluated:
            # tokenised a chunk at a time, as the datamodule does (a tokenizers Encoding
            # takes ~150 bytes a token), and the words counted without a list of them all
            from datamodules.text import token_runs

            sample = evaluated[:20_000]
            unknown_ids = total_ids = 0
            for ids, _, empty in token_runs(dm.tokenizer, sample, np.int64):
                blanks = int(empty.sum())  # an empty text's stand-in [UNK] is no token of it
                unknown_ids += int((ids == 1).sum()) - blanks
                total_ids += len(ids) - blanks
            unknown = unknown_ids / total_ids if total_ids else 0.0
            words = {w for t in texts["train"] for w in t.lower().split()}
            new_words = total_words = 0
            for text in sample:
                for word in text.lower().split():
                    new_words += word not in words
                    total_words += 1
            new = new_words / max(1, total_words)
            vocab = dm.tokenizer.get_vocab_size()
            report.facts["vocabulary"] = {
                "size": vocab,
                "unknown_token_share": round(unknown, 4),
                "unseen_word_share": round(new, 4),
            }
            if unknown > UNKNOWN_TOKENS:
                capped = vocab >= hp.vocab_size
                report.add(
                    "warning",
                    "vocab_coverage",
                    f"{unknown:.0%} of the {'test' if texts.get('test') else 'validation'} "
                    f"tokens are unknown to the training vocabulary ({vocab} tokens"
                    f"{', the cap' if capped else ''}): the model reads them all as [UNK]",
                    "datamodule.vocab_size"
                    if capped
                    else ("datamodule.tokenizer=bpe" if hp.tokenizer == "word" else None),
                )


# -- series ---------------------------------------------------------------------------------------
def _parse_times(times: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(times):
        return times.astype(np.float64)
    try:
        return pd.to_datetime(times, errors="coerce")
    except (ValueError, TypeError):  # several UTC offsets
        return pd.to_datetime(times, errors="coerce", utc=True)


def _time_checks(
    ctx: _Context,
    times: pd.Series,
    where: str,
    expected: Any = None,
    gap_severity: str = "warning",
    gap_note: str = "",
    gap_option: str | None = None,
) -> None:
    """Frequency, duplicated times and gaps of a time column (in file order)."""
    report = ctx.report
    parsed = _parse_times(times)
    valid = parsed.notna().to_numpy()
    if valid.sum() < 3:
        return
    duplicated = parsed.duplicated() & parsed.notna()
    if duplicated.any():
        rows = np.flatnonzero(duplicated.to_numpy())
        report.add(
            "error",
            "series_duplicates",
            f"{where}: {_count(int(duplicated.sum()), 'time')} repeat an earlier one "
            f"({_listed([times.iloc[r] for r in rows], 3)}; rows {_listed(rows.tolist(), 3)}, "
            "counting from 0): keep one row per time (e.g. average the duplicates)",
        )
    ordered = parsed[valid].drop_duplicates().sort_values().reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(ordered):
        position = (ordered - ordered.iloc[0]).dt.total_seconds().to_numpy()
        unit = "s"
    else:
        position, unit = ordered.to_numpy(dtype=np.float64), ""
    steps = np.diff(position)
    if not len(steps):
        return
    report.facts["time_span"] = [str(ordered.iloc[0]), str(ordered.iloc[-1])]
    if unit and len(ordered) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            regular = pd.infer_freq(pd.DatetimeIndex(ordered))
        if regular is not None:  # a regular calendar (business days, month starts...)
            report.facts["frequency"] = regular
            report.facts["gaps"] = 0
            return
    usual = float(pd.Series(steps).mode().iloc[0]) if expected is None else float(expected)
    report.facts["frequency"] = _describe_step(usual, unit)
    if usual <= 0:
        return
    big = steps > GAP_FACTOR * usual
    report.facts["gaps"] = int(big.sum())
    if not big.any():
        return
    missing = int(np.round(steps[big] / usual).sum() - big.sum())
    starts = [
        str(ordered.iloc[k]) if unit else f"{ordered.iloc[k]:g}" for k in np.flatnonzero(big)[:3]
    ]
    if big.mean() > IRREGULAR:
        report.add(
            "info",
            "gaps",
            f"{where}: the times are irregular: {big.mean():.0%} of the steps are longer than "
            f"the usual {_describe_step(usual, unit)}",
            gap_option,
        )
        return
    longest = _describe_step(float(steps[big].max()), unit)
    report.add(
        gap_severity,
        "gaps",
        f"{where}: {int(big.sum())} gap(s) in the {_describe_step(usual, unit)} series, about "
        f"{missing} missing step(s), the longest {longest}, after {_listed(starts, 3)}"
        f"{gap_note}",
        gap_option,
    )


def _describe_step(step: float, unit: str) -> str:
    if not unit:
        return f"{step:g}-step"
    return str(pd.Timedelta(seconds=step)).replace("0 days ", "")


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal consecutive values (NaN never equal)."""
    if not len(values):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(values)]]))
    return starts, lengths


def _series_values(
    ctx: _Context,
    values: np.ndarray,
    names: Sequence[str],
    time: Sequence[Any],
    where: str,
    outlier_severity: str,
    outlier_note: str,
    labelled: np.ndarray | None = None,
) -> None:
    """Constant stretches and outliers of each channel (``values``: steps x channels),
    leaving out the steps ``labelled`` as anomalies (known already)."""
    from datamodules._table_prep import TAIL_SHARE, far_out

    report = ctx.report
    known = np.zeros(len(values), dtype=bool) if labelled is None else labelled
    # a run touches a labelled step when the labelled count over it is positive
    marked = np.concatenate([[0], np.cumsum(known)])
    for j, name in enumerate(names):
        column = values[:, j]
        present = np.isfinite(column)
        if present.sum() < MIN_ROWS or len(np.unique(column[present])) <= 2:
            continue
        starts, lengths = _runs(column)
        typical = float(np.quantile(lengths, 0.99))
        limit = max(MIN_STRETCH, math.ceil(STRETCH_FACTOR * typical))
        long = (lengths >= limit) & np.isfinite(column[starts])
        long &= marked[starts + lengths] - marked[starts] == 0
        if long.any():
            shown = [
                f"{lengths[k]} steps at {column[starts[k]]:g} from {time[starts[k]]}"
                for k in np.flatnonzero(long)[:3]
            ]
            report.add(
                "warning",
                "constant_stretch",
                f"{where}: column {name!r} stays exactly constant for {int(long.sum())} "
                f"stretch(es) of {limit}+ steps ({_listed(shown, 3)}): a stuck sensor or a "
                "filled gap?",
            )
        flagged = np.zeros(len(column), dtype=bool)
        for mask, beyond in far_out(column[present]):
            if beyond <= TAIL_SHARE * present.sum() + 1:
                flagged[present] |= mask
        flagged &= ~known
        if flagged.any():
            rows = np.flatnonzero(flagged)
            shown = [f"{column[r]:g} at {time[r]}" for r in rows[:3]]
            report.add(
                outlier_severity,
                "outliers",
                f"{where}: column {name!r} has {len(rows)} value(s) far outside the rest "
                f"({_listed(shown, 3)}; median {np.median(column[present]):g}){outlier_note}",
            )


def _inspect_series(ctx: _Context) -> None:
    from datamodules._table_prep import read_table

    dm, hp, report = ctx.dm, ctx.hp, ctx.report
    raw: dict[str, Any] = {}
    with ctx.check("read the series"):
        own = dm._overrides("load_frame")
        where = f"{type(dm).__name__}.load_frame()" if own else "datamodule.path"
        frame = dm.load_frame() if own else read_table(hp.path, where)
        raw.update(frame=frame, where=where)
    if raw:
        frame, where = raw["frame"], raw["where"]
        if hp.time_column is not None and hp.time_column in frame.columns:
            with ctx.check("time"):
                _time_checks(
                    ctx,
                    frame[hp.time_column],
                    where,
                    gap_note=": the datamodule treats the rows as consecutive steps, so "
                    "windows run across the gaps",
                )
        with ctx.check("values"):
            if dm.fitted_state:
                names = list(dm.fitted_state["columns"])
            elif hp.value_columns:
                names = [str(c) for c in hp.value_columns]
            else:
                skip = {hp.time_column, hp.label_column}
                names = [
                    str(c)
                    for c in frame.columns
                    if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
                ]
            names = [n for n in names if n in frame.columns]
            values = frame[names].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
            gaps = np.isnan(values).any(axis=1)
            report.facts["missing_values"] = {
                n: float(np.isnan(values[:, j]).mean()) for j, n in enumerate(names)
            }
            if gaps.any():
                report.add(
                    "error" if hp.nan == "error" else "info",
                    "missing",
                    f"{where}: {_count(int(gaps.sum()), 'row')} with empty values (rows "
                    f"{_listed(np.flatnonzero(gaps).tolist())}, counting from 0)"
                    + ("" if hp.nan == "error" else ": interpolated linearly"),
                    "datamodule.nan",
                )
            time = (
                frame[hp.time_column].astype(str).to_numpy()
                if hp.time_column in frame.columns
                else np.arange(len(frame)).astype(str)
            )
            labelled = None
            if hp.label_column is not None and hp.label_column in frame.columns:
                labels = pd.to_numeric(frame[hp.label_column], errors="coerce").fillna(0)
                labelled = (labels == 1).to_numpy()
                report.facts["anomaly_share"] = float(labelled.mean())
            _series_values(
                ctx,
                values,
                names,
                time,
                where,
                "info",
                " (outside the labelled anomalies): anomalies to find, or errors to fix?",
                labelled,
            )
    if ctx.set_up:
        report.facts["sizes"] = {
            s: int(p["values"].shape[1]) for s, p in dm.parts.items() if s in SPLITS
        }
        report.facts["windows"] = _sizes(dm, Report())


def _inspect_forecast(ctx: _Context) -> None:
    from datamodules.forecast import fixed_step

    dm, hp, report = ctx.dm, ctx.hp, ctx.report
    raw: dict[str, Any] = {}
    with ctx.check("read the series"):
        frame, where, bundled_time = dm._source()
        time_column = hp.time_column or bundled_time or str(frame.columns[0])
        if dm.fitted_state:
            targets, covariates = dm.fitted_state["targets"], dm.fitted_state["covariates"]
        else:
            targets, covariates = dm._columns(frame, where, time_column)
        raw.update(frame=frame, where=where, time=time_column, names=[*targets, *covariates])
    if not raw:
        return
    frame, where, time_column, names = (raw[k] for k in ("frame", "where", "time", "names"))
    expected = None
    freq = dm.fitted_state.get("freq") if dm.fitted_state else hp.freq
    if isinstance(freq, (int, np.integer)):
        expected = float(freq)
    elif freq:
        step = fixed_step(str(freq))
        expected = step.total_seconds() if step is not None else None
    report.facts["freq"] = freq
    with ctx.check("time"):
        _time_checks(
            ctx,
            frame[time_column],
            where,
            expected,
            gap_severity="error" if hp.missing == "error" else "info",
            gap_note=(
                ": training refuses them (datamodule.missing=error)"
                if hp.missing == "error"
                else f": filled by datamodule.missing={hp.missing}"
            ),
            gap_option="datamodule.missing",
        )
    with ctx.check("values"):
        order = np.argsort(_parse_times(frame[time_column]).to_numpy(), kind="stable")
        ordered = frame.iloc[order]
        values = ordered[names].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        empty = np.isnan(values).any(axis=1)
        report.facts["missing_values"] = {
            n: float(np.isnan(values[:, j]).mean()) for j, n in enumerate(names)
        }
        if empty.any():
            report.add(
                "error" if hp.missing == "error" else "info",
                "missing",
                f"{where}: {_count(int(empty.sum()), 'row')} with empty values (at "
                f"{_listed(ordered[time_column].to_numpy()[empty].tolist(), 3)})",
                "datamodule.missing",
            )
        _series_values(
            ctx,
            values,
            names,
            ordered[time_column].astype(str).to_numpy(),
            where,
            "warning",
            ": errors to fix (they pull the forecasts), or events the model must learn?",
        )
    if ctx.set_up:
        report.facts["sizes"] = {s: b - a for s, (a, b) in dm.bounds.items()}
        report.facts["windows"] = _sizes(dm, Report())


# -- sequences and characters ---------------------------------------------------------------------
def _inspect_sequences(ctx: _Context) -> None:
    dm, report = ctx.dm, ctx.report
    if not ctx.set_up:
        return
    sizes = _sizes(dm, report)
    data = {s: getattr(dm, f"{s}_data") for s in sizes}
    report.facts["sequence_shape"] = list(data["train"][0].shape[1:])
    with ctx.check("classes"):
        names = dm.class_names
        _class_checks(
            ctx, names, {s: _label_counts(d, len(names)) for s, d in data.items()}, "sequences"
        )
    with ctx.check("duplicate sequences"):
        hashes = {}
        for split, d in data.items():
            x = d[0][:MAX_TEXTS]
            hashes[split] = _row_hashes(pd.DataFrame(x.reshape(len(x), -1).numpy()))
        copies = {s: np.isin(h, hashes["train"]) for s, h in hashes.items() if s != "train"}
        found = [
            f"{int(c.sum())} of {len(c)} {SPLIT_NAMES[s]} sequences"
            for s, c in copies.items()
            if c.any()
        ]
        if found:
            report.add(
                "warning",
                "cross_split_duplicates",
                f"{' and '.join(found)} repeat a training sequence exactly: their scores "
                "measure memory, not generalisation",
            )
        flat = data["train"][0].reshape(len(data["train"][0]), -1)
        constant = int((flat.amax(dim=1) == flat.amin(dim=1)).sum())
        if constant:
            report.add(
                "info",
                "constant",
                f"{constant} of {len(flat)} training sequences are constant (one value throughout)",
            )


def _inspect_chars(ctx: _Context) -> None:
    dm, report = ctx.dm, ctx.report
    if not ctx.set_up:
        return
    report.facts["sizes"] = _sizes(dm, Report())
    report.facts["vocabulary"] = {"size": len(dm.vocab)}
    items = getattr(dm, "training_items", None)
    if items:
        report.facts["items"] = len(items)
        repeated = pd.Series(items).duplicated()
        report.facts["duplicate_items"] = int(repeated.sum())


# -- writing --------------------------------------------------------------------------------------
def _cell(text: Any) -> str:
    """Text for a Markdown table cell (a ``|`` would end the cell)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(report: Report) -> str:
    facts = report.facts
    title = f"# Data doctor: {facts.get('preset') or facts.get('datamodule', 'data')}"
    verdict = (
        "training can run"
        if report.can_train
        else f"training cannot run ({len(report.of('error'))} error(s))"
    )
    lines = [
        title,
        "",
        f"{facts.get('datamodule', 'The datamodule')}, read as `mode=train` reads it; nothing "
        f"was trained. **{verdict}**: {report.summary_line()}.",
        "",
        "## Findings",
        "",
    ]
    if not report.findings:
        lines.append("None.")
    for severity in SEVERITIES:
        for f in report.of(severity):
            option = f" Option: `{f.option}`." if f.option else ""
            end = "" if f.what.endswith((".", "?", "!")) else "."
            lines.append(f"- **{f.severity}** (`{f.kind}`): {f.what}{end}{option}")
    lines += ["", "## Facts", ""]
    if facts.get("sizes"):
        lines.append("Sizes: " + ", ".join(f"{k} {v}" for k, v in facts["sizes"].items()) + ".\n")
    if facts.get("columns"):
        lines += ["| column | type | role | missing | distinct |", "|---|---|---|---|---|"]
        for name, c in facts["columns"].items():
            lines.append(
                f"| {_cell(name)} | {c['type']} | {c['role']} | {c['missing_share']:.1%} | "
                f"{c['distinct']} |"
            )
        lines.append("")
    if facts.get("classes"):
        splits = list(next(iter(facts["classes"].values())))
        lines += ["| class | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
        for name, counts in facts["classes"].items():
            lines.append(f"| {_cell(name)} | " + " | ".join(str(counts[s]) for s in splits) + " |")
        lines.append("")
    rest = {k: v for k, v in facts.items() if k not in ("columns", "classes", "sizes")}
    if rest:
        from tasks._files import to_json

        lines += ["```json", to_json(_plain(rest), indent=2), "```"]
    return "\n".join(lines) + "\n"


def write(report: Report, folder: str | Path) -> Path:
    """Write ``doctor.md`` (readable) and ``doctor.json`` (``{"findings": [...], "facts":
    {...}}``, strict JSON) into ``folder`` (created if needed); returns the folder."""
    from tasks._files import ensure_folder, write_json, write_text_atomic

    path = ensure_folder(folder, "doctor output folder")
    write_json(path / "doctor.json", report.to_dict())
    write_text_atomic(path / "doctor.md", _markdown(report))
    return path


# -- command line ---------------------------------------------------------------------------------
USAGE = "usage: python -m tasks doctor +task=PRESET [key=value ...] [--strict] [--out DIR]"


def main(args: list[str]) -> int:
    """``python -m tasks doctor +task=PRESET [overrides] [--strict] [--out DIR]``.

    Prints the short report, writes ``doctor.md`` and ``doctor.json`` into ``--out``
    (default ``outputs/<preset>/doctor_<date>_<time>``).

    Returns:
        0 (findings or none), 2 when training could not run (an error finding, or a config
        that cannot be composed), 1 with ``--strict`` when there are warnings.
    """
    from tasks.api import compose
    from tasks.engine.hydra_config import claim_new_dir

    strict, out, preset, overrides = False, None, None, []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--strict":
            strict = True
        elif arg == "--out" and rest:
            out = rest.pop(0)
        elif arg.startswith("--out="):
            out = arg.partition("=")[2]
        elif arg in ("-h", "--help"):
            print(USAGE)
            return 0
        elif arg.startswith("-"):
            print(f"error: doctor: unknown option {arg!r}\n{USAGE}", file=sys.stderr)
            return 2
        elif arg.startswith(("+task=", "task=")) and preset is None:
            preset = arg.partition("=")[2]
        else:
            overrides.append(arg)
    if not preset:
        print(f"error: doctor: name the preset with +task=NAME\n{USAGE}", file=sys.stderr)
        return 2
    try:
        from hydra.errors import HydraException

        try:
            cfg = compose(preset, overrides)
        except HydraException as exc:
            raise ConfigError(_one_line(exc)) from exc
        report = diagnose(cfg)
        if out is None:
            stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
            out = claim_new_dir(str(Path("outputs") / preset / f"doctor_{stamp}"), remember=False)
        folder = write(report, out)
    except _user_errors() as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    print(f"report: {folder / 'doctor.md'}")
    return report.exit_code(strict)
