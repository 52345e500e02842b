"""The same command on two CPU processes (DDP over gloo): one run directory, synced results."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import run_cli


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset,artefact",
    [
        ("breast_cancer_mlp", "confusion_matrix.csv"),
        ("height_weight_regression", "predictions_vs_truth.png"),
    ],
)
def test_ddp_cpu_run_finishes_with_one_run_directory(preset, artefact, tmp_path):
    result = run_cli(
        f"+task={preset}",
        "trainer=ddp_cpu",
        "debug=tiny",
        "trainer.limit_test_batches=null",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summaries = list(tmp_path.rglob("summary.json"))
    assert summaries == [tmp_path / "run" / "summary.json"]  # rank 1 wrote no run of its own
    assert (tmp_path / "run" / artefact).is_file()
    summary = json.loads(summaries[0].read_text())
    assert summary["metrics"]
    if preset == "breast_cancer_mlp":
        # the synced confusion matrix counts every test row once (114 rows, 57 per rank)
        confusion = pd.read_csv(tmp_path / "run" / "confusion_matrix.csv", index_col=0)
        assert int(confusion.to_numpy().sum()) == 114
