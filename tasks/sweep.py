"""Sweeps: a results table of every job of a Hydra multirun (basic, Optuna or any sweeper).

Each finished job (completed or failed) leaves ``sweep_row.json`` in its directory and the
table ``sweep_results.csv`` in the sweep directory is rebuilt from all of them, so it is
complete even when a sweeper stops early. Columns: ``job``, ``status``, ``overrides``, one
column per overridden key, the monitored validation score, the test metrics, ``run_dir``
and ``error``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from tasks._files import to_json, write_text_atomic

ROW_FILE = "sweep_row.json"
TABLE_FILE = "sweep_results.csv"


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def write_table(sweep_dir: Path) -> Path | None:
    """Rebuild ``sweep_results.csv`` from the jobs' rows under ``sweep_dir``."""
    import pandas as pd

    rows = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{ROW_FILE}"))]
    if not rows:
        return None
    frame = pd.DataFrame(rows).sort_values("job", kind="stable")
    first = ["job", "status", "overrides"]
    last = ["run_dir", "error"]
    middle = [c for c in frame.columns if c not in first + last]
    path = sweep_dir / TABLE_FILE
    # parallel jobs rebuild it as they finish: each replaces it whole, never half-written
    write_text_atomic(
        path, frame[first + middle + [c for c in last if c in frame]].to_csv(index=False)
    )
    return path


class SweepResults(Callback):
    """Hydra callback (configured in ``hydra.callbacks``); does nothing in single runs."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not in_multirun():
            return
        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        overrides = list(hydra_cfg.overrides.task)
        row: dict[str, Any] = {
            "job": int(hydra_cfg.job.num),
            "status": "completed" if job_return.status == JobStatus.COMPLETED else "failed",
            "overrides": " ".join(overrides),
        }
        for item in overrides:
            key, _, value = item.lstrip("+~").partition("=")
            row[key] = value
        summary_path = run_dir / "summary.json"
        if row["status"] == "completed" and summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            best = summary.get("best_score") or {}
            if best.get("monitor"):
                row[f"best {best['monitor']}"] = best.get("value")
            row.update(summary.get("metrics", {}))
        row["run_dir"] = str(run_dir)
        row["error"] = "" if row["status"] == "completed" else str(job_return._return_value)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / ROW_FILE, to_json(row))
        write_table(run_dir.parent)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_table(Path(config.hydra.sweep.dir))
        if path is not None:
            print(f"sweep results: {path}")
