"""Peer check: standard scikit-learn models fitted on the same training rows as the network
and scored on the same test rows with the task's own metrics.

A network that loses to logistic regression or gradient boosting on its own data is worth
knowing about; :func:`peer_scores` says so in one sentence. Peers by datamodule:

- tables (:class:`~datamodules.tabular.TabularDataModule`): a regularised linear model
  (``logistic_regression`` / ``ridge``) and ``hist_gradient_boosting``, on the
  datamodule's encoded training rows (numeric columns imputed and standardised,
  categorical codes one-hot encoded for the linear model and given to gradient boosting as
  categorical features);
- texts (:class:`~datamodules.text.TextDataModule`): ``tfidf_logistic_regression`` on the
  raw training texts (word unigrams and bigrams);
- sequences (:class:`~datamodules.sequence.SequenceDataModule`): ``logistic_regression``
  on the normalised values;
- anything else (forecasts report naive baselines of their own): no peers.

Every peer is seeded (``random_state=0``), so the same data gives the same scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: Training rows a peer is fitted on at most; more are subsampled (seeded), with a note.
MAX_ROWS = 100_000
#: Estimated fitting seconds per million training cells (rows x input columns), per peer,
#: measured on 2 CPU cores with margin; a peer whose estimate exceeds the time left is
#: skipped with a note.
SECONDS_PER_MILLION_CELLS = {
    "logistic_regression": 1.0,
    "ridge": 0.2,
    "hist_gradient_boosting": 2.0,
    "tfidf_logistic_regression": 4.0,
}
#: Metrics where lower is better (everything else: higher is better).
LOWER_IS_BETTER = ("loss", "mse", "rmse", "mae", "mape", "smape", "perplexity")
#: Categories up to which gradient boosting treats a code column as categorical (its
#: ``max_bins``); wider columns are given to it as ordinal codes.
MAX_HGB_CATEGORIES = 255

#: A peer: its name, a function making the unfitted model, and one fitting a model on the
#: training rows and returning its test predictions.
Peer = tuple[str, Callable[[], Any], Callable[[Any], np.ndarray]]


def peer_scores(
    task: Any,
    datamodule: Any,
    budget_s: float = 30.0,
    test_metrics: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Fit the standard peers of the datamodule's kind of data on its training rows and
    score them on its test rows, with the task's metrics (same names, same definitions,
    regression in original units).

    Args:
        task: The task whose network was tested (its ``configure_metrics`` and
            ``metric_inputs`` score the peers; ``main_metric`` ranks them).
        datamodule: The datamodule after ``setup("fit")``: ``train_data`` and
            ``test_data`` are the rows the network was trained and tested on.
        budget_s: Seconds for all peers together: a peer whose estimated fitting time
            exceeds what is left is skipped, and none starts once it is spent.
        test_metrics: The network's test metrics (``test/acc`` or ``acc`` keys), for the
            note saying whether it beats the best peer.

    Returns:
        ``{"metrics": {"peer/<name>/<metric>": value}, "best": name or None,
        "notes": [sentences]}``; empty metrics for data without peers.
    """
    result: dict[str, Any] = {"metrics": {}, "best": None, "notes": []}
    plan = _plan(task, datamodule)
    if plan is None:
        return result
    kind, peers, rows, columns = plan
    notes = result["notes"]
    if rows > MAX_ROWS:
        notes.append(
            f"peers were fitted on a seeded sample of {MAX_ROWS:,} of the {rows:,} training rows"
        )
    cells = min(rows, MAX_ROWS) * max(columns, 1) / 1e6
    started = time.perf_counter()
    scores: dict[str, dict[str, float]] = {}
    for name, make, fit_predict in peers:
        left = budget_s - (time.perf_counter() - started)
        estimate = SECONDS_PER_MILLION_CELLS.get(name, 1.0) * cells
        if left <= 0:
            notes.append(f"peer {name} skipped: the peer budget of {budget_s:g} s was spent")
            continue
        if estimate > left:
            notes.append(
                f"peer {name} skipped: fitting {min(rows, MAX_ROWS):,} rows x {columns:,} "
                f"columns would take about {estimate:.0f} s, over the {left:.0f} s left of "
                f"the peer budget ({budget_s:g} s)"
            )
            continue
        try:
            scores[name] = _score(task, kind, fit_predict(make()), datamodule)
        except (ValueError, RuntimeError, TypeError, IndexError) as exc:
            # e.g. a plugin task whose metrics take another output shape (quantiles)
            reason = " ".join(str(exc).split())[:160]
            notes.append(
                f"peer {name} skipped: its predictions do not fit the task's metrics "
                f"({type(exc).__name__}: {reason})"
            )
    for name, values in scores.items():
        result["metrics"].update({f"peer/{name}/{k}": v for k, v in values.items()})
    main = getattr(task, "main_metric", "acc")
    ranked = [n for n in scores if np.isfinite(scores[n].get(main, np.nan))]
    if not ranked:
        return result
    sign = -1.0 if main in LOWER_IS_BETTER else 1.0
    best = max(ranked, key=lambda n: sign * scores[n][main])
    result["best"] = best
    result["metric"] = main
    notes.insert(0, verdict(main, best, scores[best][main], test_metrics or {}))
    return result


def verdict(metric: str, peer: str, peer_value: float, test_metrics: Mapping[str, float]) -> str:
    """One sentence: whether the network beats the best peer on ``metric``, by how much."""
    network = test_metrics.get(f"test/{metric}", test_metrics.get(metric))
    if network is None or not np.isfinite(float(network)):
        return f"the best peer, {peer}, scores test {metric} {peer_value:.4g}"
    network = float(network)
    lower = metric in LOWER_IS_BETTER
    gain = (peer_value - network) if lower else (network - peer_value)
    beats = gain > 0
    return (
        f"the network {'beats' if beats else 'does not beat'} the best peer, {peer}, on "
        f"test {metric}: {network:.4g} against {peer_value:.4g} "
        f"({'better' if beats else 'worse' if gain < 0 else 'equal'}"
        + (f" by {abs(gain):.4g})" if gain else ")")
    )


# -- what each kind of data gets ----------------------------------------------------------
def _plan(task: Any, datamodule: Any) -> tuple[str, list[Peer], int, int] | None:
    """The kind of problem, the peers, and the training rows and input columns; None: no
    peers."""
    from datamodules.sequence import SequenceDataModule
    from datamodules.tabular import TabularDataModule
    from datamodules.text import TextDataModule

    train, test = getattr(datamodule, "train_data", None), getattr(datamodule, "test_data", None)
    if train is None or test is None or not hasattr(task, "configure_metrics"):
        return None
    if isinstance(datamodule, TabularDataModule):
        if datamodule.classification:
            return _tabular(datamodule, classify=True)
        return _tabular(datamodule, classify=False, unscale=task.unscale)
    if isinstance(datamodule, TextDataModule):
        return _texts(datamodule)
    if isinstance(datamodule, SequenceDataModule):
        x, y = train[0].flatten(1).numpy(), train[-1].numpy()
        x, y, rows = _sample(x, y)
        test_x = test[0].flatten(1).numpy()
        peers: list[Peer] = [("logistic_regression", _logistic, _fitter(x, y, test_x))]
        return "classification", peers, rows, x.shape[1]
    return None


def _sample(x: Any, y: np.ndarray) -> tuple[Any, np.ndarray, int]:
    """At most :data:`MAX_ROWS` rows (a seeded sample, in their order), and the row count."""
    rows = len(y)
    if rows <= MAX_ROWS:
        return x, y, rows
    keep = np.sort(np.random.default_rng(0).choice(rows, MAX_ROWS, replace=False))
    return x[keep], y[keep], rows


def _fitter(x: Any, y: np.ndarray, test_x: Any) -> Callable[[Any], np.ndarray]:
    """Fits a model on ``(x, y)``: class probabilities (classifiers) or predictions of the
    test rows."""

    def fit_predict(model: Any) -> np.ndarray:
        model.fit(x, y)
        if hasattr(model, "predict_proba"):
            return _all_classes(model.predict_proba(test_x), model.classes_)
        return model.predict(test_x)

    return fit_predict


def _all_classes(prob: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Probabilities over every class id up to the largest seen (a class with no training
    row gets 0); the caller widens them to ``num_classes``."""
    out = np.zeros((len(prob), int(seen.max()) + 1))
    out[:, seen.astype(int)] = prob
    return out


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=1000, random_state=0)


def _tabular(
    datamodule: Any, classify: bool, unscale: Callable[[Tensor], Tensor] | None = None
) -> tuple[str, list[Peer], int, int]:
    from scipy import sparse
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import OneHotEncoder

    (x_num, x_cat, y), (t_num, t_cat, _) = datamodule.train_data, datamodule.test_data
    if not classify:  # fitted and scored in original units
        y = unscale(y)
    x_num, x_cat, t_num, t_cat = (t.numpy() for t in (x_num, x_cat, t_num, t_cat))
    y = y.numpy()
    both, y, rows = _sample(np.concatenate([x_num, x_cat], axis=1), y)
    x_num, x_cat = both[:, : x_num.shape[1]], both[:, x_num.shape[1] :].astype(np.int64)
    cards = list(datamodule.prep.cardinalities)
    # linear: numeric block (already imputed, standardised, small categories one-hot) and
    # the embedded code columns one-hot (unknown codes at test time count as none)
    if x_cat.shape[1]:
        onehot = OneHotEncoder(handle_unknown="ignore").fit(x_cat)
        linear_x = sparse.hstack([sparse.csr_matrix(x_num), onehot.transform(x_cat)]).tocsr()
        linear_test = sparse.hstack([sparse.csr_matrix(t_num), onehot.transform(t_cat)]).tocsr()
    else:
        linear_x, linear_test = x_num, t_num
    # gradient boosting: the code columns as categorical features where they fit its bins
    tree_x = np.concatenate([x_num, x_cat], axis=1)
    tree_test = np.concatenate([t_num, t_cat], axis=1)
    categorical = [False] * x_num.shape[1] + [c <= MAX_HGB_CATEGORIES for c in cards]
    categorical_features = np.asarray(categorical, dtype=bool) if any(categorical) else None
    columns = linear_x.shape[1]

    def linear_fit(model: Any) -> np.ndarray:
        return _fitter(linear_x, y, linear_test)(model)

    def tree_fit(model: Any) -> np.ndarray:
        if classify or y.ndim == 1:
            return _fitter(tree_x, y, tree_test)(model)
        from sklearn.base import clone

        return np.stack(  # one model per target
            [_fitter(tree_x, y[:, j], tree_test)(clone(model)) for j in range(y.shape[1])],
            axis=1,
        )

    def hgb() -> Any:
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return cls(categorical_features=categorical_features, random_state=0)

    linear_name = "logistic_regression" if classify else "ridge"
    peers: list[Peer] = [
        (linear_name, _logistic if classify else (lambda: Ridge(alpha=1.0)), linear_fit),
        ("hist_gradient_boosting", hgb, tree_fit),
    ]
    return ("classification" if classify else "regression"), peers, rows, columns


def _texts(datamodule: Any) -> tuple[str, list[Peer], int, int]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    texts = np.asarray(datamodule.texts["train"], dtype=object)
    labels = datamodule.train_data[-1].numpy()
    texts, labels, rows = _sample(texts, labels)
    test_texts = list(datamodule.texts["test"])

    def tfidf_lr() -> Any:
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        return make_pipeline(vectorizer, _logistic())

    # cost grows with the words per text: counted as columns (a 200-text sample)
    words = int(np.mean([len(str(t).split()) for t in texts[:200]])) if len(texts) else 0
    fit = _fitter(list(texts), labels, test_texts)
    return "classification", [("tfidf_logistic_regression", tfidf_lr, fit)], rows, words


# -- scoring ------------------------------------------------------------------------------
def _score(task: Any, kind: str, predicted: np.ndarray, datamodule: Any) -> dict[str, float]:
    """The task's test metrics of the peer's predictions (class probabilities, or values in
    original units), computed as the network's are."""
    metrics = task.configure_metrics()
    from torchmetrics import Metric

    for metric in metrics.modules():  # scored on rank zero alone: no sync with other ranks
        if isinstance(metric, Metric):
            metric.sync_on_compute = metric._to_sync = False
    target = datamodule.test_data[-1]
    if kind == "classification":
        n = int(task.hparams.num_classes)
        prob = np.zeros((len(predicted), n))
        prob[:, : predicted.shape[1]] = predicted
        # log-probabilities as logits: the task's own softmax gives them back unchanged
        logits = torch.from_numpy(np.log(np.clip(prob, 1e-30, None))).float()
        output, target = task.metric_inputs(logits.to(task.device), target.to(task.device))
    else:
        output = torch.from_numpy(np.asarray(predicted, dtype=np.float32))
        target = task.unscale(target.to(task.device))
    metrics.update(output.cpu(), target.cpu())
    return {name: float(value) for name, value in metrics.compute().items()}
