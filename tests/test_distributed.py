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


@pytest.mark.slow
def test_ddp_predict_returns_every_row_once_in_input_order(tmp_path, table_csv):
    train = run_cli(
        "+task=tabular_classification",
        f"datamodule.path={table_csv}",
        "datamodule.target=label",
        "debug=tiny",
        f"hydra.run.dir={tmp_path}/train",
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = tmp_path / "train" / "checkpoints" / "best.ckpt"
    rows = pd.read_csv(table_csv).drop(columns="label").head(37)  # odd: ranks get 19 + 18
    rows.to_csv(tmp_path / "new.csv", index=False)
    outputs = {}
    for trainer in ("cpu", "ddp_cpu"):
        result = run_cli(
            "+task=tabular_classification",
            f"datamodule.path={table_csv}",
            "datamodule.target=label",
            "mode=predict",
            f"ckpt_path={ckpt}",
            f"datamodule.predict_path={tmp_path / 'new.csv'}",
            "datamodule.eval_batch_size=4",
            f"trainer={trainer}",
            f"hydra.run.dir={tmp_path}/{trainer}",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[trainer] = pd.read_csv(tmp_path / trainer / "predictions.csv")
    single, ddp = outputs["cpu"], outputs["ddp_cpu"]
    assert len(ddp) == 37 and ddp.row.tolist() == list(range(37))
    pd.testing.assert_frame_equal(ddp, single, check_exact=False, rtol=1e-5)


@pytest.mark.slow
def test_two_node_torchrun_launch_on_one_machine(tmp_path):
    """Two "nodes" of one process each on 127.0.0.1, started by torchrun as a cluster
    would: Lightning reads the ranks from torchrun's environment."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
    ]
    job = [
        "-m",
        "tasks",
        "+task=breast_cancer_mlp",
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "debug=tiny",
        "trainer.limit_test_batches=null",
        f"hydra.run.dir={tmp_path}/run",
    ]
    nodes = [
        subprocess.Popen(
            [*command, "--node-rank", str(rank), *job],
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "process 1 of 2 (node 0)" in outputs[0] and "process 2 of 2 (node 1)" in outputs[1]
    assert list(tmp_path.rglob("summary.json")) == [tmp_path / "run" / "summary.json"]
    confusion = pd.read_csv(tmp_path / "run" / "confusion_matrix.csv", index_col=0)
    assert int(confusion.to_numpy().sum()) == 114  # both nodes' test rows, once each


@pytest.mark.slow
def test_ddp_test_metrics_match_a_single_process_run(tmp_path):
    """Same seed, same effective batch (one process x 64 rows, two x 32): the synced test
    metrics agree with one process within 0.03 accuracy (4 of 114 test rows); the
    trajectories differ only in which rows share a step."""
    metrics = {}
    for trainer, batch in (("cpu", 64), ("ddp_cpu", 32)):
        result = run_cli(
            "+task=breast_cancer_mlp",
            f"trainer={trainer}",
            f"datamodule.batch_size={batch}",
            "trainer.max_epochs=15",
            "callbacks.early_stopping=null",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path}/{trainer}",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((tmp_path / trainer / "summary.json").read_text())
        metrics[trainer] = summary["metrics"]
    assert abs(metrics["cpu"]["test/acc"] - metrics["ddp_cpu"]["test/acc"]) <= 0.03
    assert abs(metrics["cpu"]["test/auroc"] - metrics["ddp_cpu"]["test/auroc"]) <= 0.02
    assert metrics["ddp_cpu"]["test/acc"] > 0.9


@pytest.mark.parametrize("world", [2, 3])
def test_unshard_undoes_the_tensor_loader_sharding(world, monkeypatch):
    import torch

    from datamodules.base import TensorLoader
    from tasks._ranks import unshard

    rows = torch.arange(7)
    shares = []
    for rank in range(world):
        monkeypatch.setattr(TensorLoader, "_world", staticmethod(lambda r=rank: (r, world)))
        loader = TensorLoader(rows, batch_size=2)
        shares.append(torch.cat([batch for (batch,) in loader]))
    assert len({len(share) for share in shares}) == 1  # equal shares, padded by wrapping
    assert unshard(torch.stack(shares), len(rows)).tolist() == rows.tolist()
