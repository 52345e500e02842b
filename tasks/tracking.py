"""Experiment tracking with MLflow (``logger=mlflow``): Lightning's MLflow logger with a
local SQLite store by default, and the run's files (report, plots, summary, config, the
checkpoint's path, the bundle) attached to the MLflow run at the end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError

log = logging.getLogger(__name__)

#: Where runs go without ``logger.mlflow.tracking_uri``: ``mlflow ui`` in this folder's
#: parent finds them (``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``).
DEFAULT_STORE = Path("mlruns")


def mlflow_logger(
    save_dir: str,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
) -> Any:
    """Lightning's ``MLFlowLogger``; without ``tracking_uri``, a SQLite store in ``./mlruns``
    (``mlruns/mlflow.db``, artefacts in ``mlruns/artifacts``) so that ``mlflow ui`` works
    offline.

    Args:
        save_dir: The run folder (the runner passes it; used for the default run name).
        experiment_name: The MLflow experiment (default: the preset); the folds of a
            cross-validation and the jobs of a sweep share it.
        tracking_uri: A tracking server or store URI (``http://...``, ``sqlite:///...``).
        run_name: The MLflow run's name (default: the run folder's name).
        tags: Extra tags.

    Raises:
        ConfigError: MLflow is not installed.
    """
    try:
        import mlflow  # noqa: F401
        from lightning.pytorch.loggers import MLFlowLogger
    except ImportError:
        raise ConfigError(
            'logger=mlflow needs MLflow: pip install "lightning-tasks[mlflow]"'
        ) from None
    artifacts = None
    if tracking_uri is None:
        DEFAULT_STORE.mkdir(parents=True, exist_ok=True)
        store = DEFAULT_STORE.resolve()
        tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
        artifacts = (store / "artifacts").as_uri()
    folder = Path(save_dir)
    return MLFlowLogger(
        experiment_name=experiment_name or "lightning-tasks",
        run_name=run_name or f"{folder.parent.name}/{folder.name}",
        tracking_uri=tracking_uri,
        tags={k: str(v) for k, v in (tags or {}).items()},
        artifact_location=artifacts,
        log_model=False,
    )


def record_run(loggers: list[Any], output_dir: Path, summary: dict[str, Any]) -> None:
    """Attach the run's files and facts to every MLflow run among ``loggers``: the report,
    summary, config, doctor findings and plots as artefacts; the resolved config as a
    params file; the checkpoint path, preset, status and peer check as tags."""
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in loggers:
        if not isinstance(logger, MLFlowLogger):
            continue
        client, run_id = logger.experiment, logger.run_id
        files = ["report.html", "summary.json", "config.yaml", "doctor.md", "doctor.json"]
        paths = [output_dir / f for f in files] + sorted(output_dir.glob("*.png"))
        paths += sorted(output_dir.glob("*.csv"))
        for path in paths:
            if path.is_file():
                client.log_artifact(run_id, str(path))
        _log_config(client, run_id, output_dir / "config.yaml")
        tags = {
            "preset": summary.get("preset"),
            "mode": summary.get("mode"),
            "status": summary.get("status"),
            "run_folder": str(output_dir),
            "best_checkpoint": summary.get("best_checkpoint"),
            "peer_check": summary.get("peer_check"),
            "bundle": summary.get("bundle"),
        }
        for key, value in tags.items():
            if value is not None:
                client.set_tag(run_id, key, str(value)[:5000])
        log.info("MLflow: run %s in %s", run_id, logger._tracking_uri)


def _flat(node: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: str(node)[:500]}


def _log_config(client: Any, run_id: str, config: Path) -> None:
    """The resolved config's task, datamodule and trainer settings and seed as params."""
    if not config.is_file():
        return
    import yaml
    from mlflow.entities import Param

    data = yaml.safe_load(config.read_text()) or {}
    chosen = {k: data[k] for k in ("task", "datamodule", "trainer", "seed") if k in data}
    params = [Param(k, v) for k, v in sorted(_flat(chosen).items())]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=params[start : start + 100])
