"""First contact: configs found from a source checkout, what a run prints to a person (or a
log), the closing block's commands, ``--version`` and ``list --problem``, declared imports."""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import lightning as L
import pytest
from conftest import ROOT, make_table, run_cli, run_on_file

from datamodules.tabular import TabularDataModule
from tasks import fused
from tasks.callbacks import BatchProgressBar, NetworkSummary, _NetworkLayers, batch_rows
from tasks.engine import registry as _registry
from tasks.tabular import TabularClassification


def _site_packages() -> list[str]:
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]


def test_source_checkout_finds_its_configs_from_the_checkout_root(tmp_path):
    """``python -m tasks`` at the root of a checkout imports ``tasks`` from the checkout, where
    ``tasks/conf`` does not exist: a wheel or editable install cannot supply the mapping.
    ``-S`` keeps the editable install's import hook out, as a non-editable install would."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(_site_packages()),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop(_registry.DISABLE_PLUGINS_ENV, None)
    command = [sys.executable, "-S", "-m", "tasks"]
    listed = subprocess.run(
        [*command, "list", "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "cannot be found" not in listed.stderr
    preset = json.loads(listed.stdout)["presets"]["breast_cancer_mlp"]
    assert Path(preset["path"]) == ROOT / "conf" / "task" / "breast_cancer_mlp.yaml"

    run_dir = tmp_path / "run"
    result = subprocess.run(
        [*command, "+task=iris_mlp", "debug=tiny", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["metrics"]["test/acc"] > 0.5


def test_mapped_config_package_falls_back_to_the_checkout_folder(monkeypatch):
    monkeypatch.setattr(_registry, "_find_package_dir", lambda module: None)
    assert _registry.package_dir("tasks.conf") == ROOT / "conf"
    assert _registry.package_dir("someone_else.conf") is None


def test_a_data_warning_is_one_line_without_a_python_location(tmp_path):
    """Davis's height of 57 cm (a typo in the data set) is flagged: one `warning: ` line."""
    result = run_cli(
        "+task=height_weight_regression",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any("extreme value" in line and "57" in line for line in lines), lines
    assert all(line.startswith("warning: ") for line in lines), lines
    assert ".py:" not in result.stderr  # no file:line prefix, no echoed source line
    assert "extreme value" in (tmp_path / "run" / "tasks.log").read_text()  # kept in the log


def _epoch_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("epoch ")]


def test_a_run_into_a_pipe_prints_one_line_per_epoch_with_the_logged_numbers(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "+task=breast_cancer_mlp", "trainer.max_epochs=4", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out, err = result.stdout, result.stderr

    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/loss") or r.get("train/loss")]
    by_epoch: dict[int, dict[str, float]] = {}
    for row in rows:
        values = by_epoch.setdefault(int(row["epoch"]), {})
        values.update({k: float(v) for k, v in row.items() if v and "/" in k})
    lines = _epoch_lines(out)
    assert len(lines) == 4 == len(by_epoch)
    for number, line in enumerate(lines, start=1):
        fields = line.split("  ")
        assert fields[0] == f"epoch {number}/4"
        printed = dict(f.rsplit(" ", 1) for f in fields[1:] if "/" in f)
        assert set(printed) == {"train/loss", "val/loss", "val/acc"}
        for key, text in printed.items():
            assert float(text) == pytest.approx(by_epoch[number - 1][key], rel=1e-3)
        assert fields[-1].endswith(" s") or fields[-1] == "best"

    # the network, not the metric objects; the device once, in our words
    assert "TabularNet" in out and "parameters:" in out
    assert "metrics" not in out.split("epoch 1/4")[0]
    assert out.count("device: cpu") == 1
    noise = ("litlogger", "LeafSpec", "GPU available", "already configured", "TPU available")
    assert not [n for n in noise if n in out + err]
    # the library's warnings: one line each, no Python location prefix or source echo
    warning_lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("warning: ") for line in warning_lines)
    assert "DataWarning" not in err and ".py:" not in err
    log = (run_dir / "tasks.log").read_text()
    assert "GPU available" in log  # the file keeps everything

    # the closing block: test metrics beside the baseline, best epoch, folder
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"best epoch {summary['best_epoch']} of 4" in out
    acc_line = next(line for line in out.splitlines() if line.strip().startswith("acc "))
    model, baseline = map(float, acc_line.split()[1:3])
    assert model == pytest.approx(summary["metrics"]["test/acc"], abs=1e-4)
    assert baseline == pytest.approx(summary["baseline"]["baseline/acc"], abs=1e-4)
    assert f"run folder: {run_dir}" in out
    assert "Test metric" not in out  # Lightning's own table is not printed twice


def _command(out: str, label: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(f"{label}:"))
    args = shlex.split(line.partition(":")[2])
    assert args[:3] == ["python", "-m", "tasks"]
    return [sys.executable, *args[1:]]


def _run_folder(out: str) -> Path:
    line = next(line for line in out.splitlines() if line.startswith("run folder: "))
    return Path(line.removeprefix("run folder: "))


@pytest.mark.slow
def test_the_closing_block_commands_run_as_printed(tmp_path):
    table = tmp_path / "my table.csv"  # a space: the commands must quote it
    make_table(150).to_csv(table, index=False)
    first = run_on_file(
        "tabular_classification",
        table,
        "label",
        "trainer.max_epochs=2",
        "task.hidden_sizes=[8]",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    predict = subprocess.run(
        _command(first.stdout, "predict"), cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert "predictions: " in predict.stdout
    predictions = _run_folder(predict.stdout) / "predictions.csv"
    assert len(predictions.read_text().splitlines()) == 151

    resumed = subprocess.run(
        _command(first.stdout, "continue"), cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((_run_folder(resumed.stdout) / "summary.json").read_text())
    assert summary["epochs"] == 4  # two more epochs on top of the checkpoint's two
    assert [line.split("  ")[0] for line in _epoch_lines(resumed.stdout)] == [
        "epoch 3/4",
        "epoch 4/4",
    ]


def _tabular(rows: int = 200) -> tuple[TabularClassification, TabularDataModule]:
    datamodule = TabularDataModule(frame=make_table(rows), target="label", batch_size=8)
    datamodule.setup("fit")
    return TabularClassification(**datamodule.data_facts()), datamodule


def test_network_summary_lists_layers_not_metric_objects():
    task, _ = _tabular()
    names = _NetworkLayers(task, max_depth=2).layer_names
    assert "model" in names and any(n.startswith("model.") for n in names)
    assert not [n for n in names if "metrics" in n or "loss" in n or n == "criterion"]


def test_progress_bar_counts_batches_and_rows_of_step_groups():
    task, datamodule = _tabular(200)
    bar = BatchProgressBar(console_kwargs={"file": io.StringIO(), "force_terminal": True})
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[bar],
        num_sanity_val_steps=0,
    )
    assert fused.configure(task, trainer, datamodule, 4) == 4
    trainer.fit(task, datamodule=datamodule)
    loader = datamodule.train_dataloader()
    train_bar = bar.progress.tasks[bar.train_progress_bar_id]
    assert len(loader) < loader.num_batches  # Lightning counts groups...
    assert train_bar.total == train_bar.completed == loader.num_batches  # ...the bar batches
    assert train_bar.fields["rows"] == len(datamodule.train_data[0])
    rendered = bar.progress.console.file.getvalue()
    assert "rows/s" in rendered and "it/s" not in rendered


def test_a_long_epoch_off_a_terminal_reports_its_progress(capsys):
    from tasks.callbacks import EpochLines

    task, datamodule = _tabular(200)
    lines = EpochLines(every=0.0)  # every batch counts as "a while"
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, callbacks=[lines])
    trainer.fit(task, datamodule=datamodule)
    out = capsys.readouterr().out.splitlines()
    epochs = [line for line in out if line.startswith("epoch ")]
    progress = [line for line in out if line.startswith("  epoch 1: ")]
    batches = datamodule.train_dataloader().num_batches
    assert [e.split("  ")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert len(progress) == batches  # one per batch here, none with the default minute
    assert progress[-1].startswith(f"  epoch 1: {batches}/{batches} batches, ")


def test_batch_rows_counts_tuples_dicts_and_groups():
    import torch

    batch = (torch.zeros(5, 3), torch.zeros(5))
    assert batch_rows(batch) == 5
    assert batch_rows({"x": torch.zeros(7, 2), "y": torch.zeros(7)}) == 7
    assert batch_rows(fused.StepGroup([batch, (torch.zeros(2, 3), torch.zeros(2))])) == 7


def test_summary_is_plain_text_off_a_terminal(capsys):
    task, _ = _tabular()
    callback = NetworkSummary(max_depth=2)
    summary = callback._summary(None, task)
    NetworkSummary.summarize(
        summary._get_summary_data(),
        summary.total_parameters,
        summary.trainable_parameters,
        summary.model_size,
        summary.total_training_modes,
        total_flops=0,
    )
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["Name", "Type", "Params"]
    assert "TabularNet" in out and "┃" not in out and "metrics" not in out


def test_version_names_the_library_and_its_engine():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"lightning-tasks {metadata.version('lightning-tasks')} (")
    assert f"lightning {metadata.version('lightning')}" in result.stdout


def test_list_groups_presets_by_problem_and_filters_them():
    result = run_cli("list", "--problem", "regression", "--json")
    assert result.returncode == 0, result.stderr
    presets = json.loads(result.stdout)["presets"]
    assert "diabetes_regression" in presets and "breast_cancer_mlp" not in presets
    assert {p["task"] for p in presets.values()} == {"tabular_regression"}

    text = run_cli("list").stdout
    heading = text.index("\ntabular_classification:")
    assert text.index("breast_cancer_mlp") > heading > text.index("\nforecasting:")

    missing = run_cli("list", "--problem", "astrology")
    assert missing.returncode == 2
    assert "matches no preset; problems: char_language_model" in missing.stderr


def _third_party_imports(folders: list[Path]) -> set[str]:
    own = {"tasks", "datamodules"}
    found = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in own and top not in sys.stdlib_module_names:
                        found.add(top)
    return found


def _requirement_name(requirement: str) -> str:
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop)[0]
    return requirement.lower().replace("_", "-")


def test_every_imported_distribution_is_declared():
    """What the library imports is in its own dependencies (not only a dependency's), or in
    the extra that the importing feature names (ONNX, serving: their modules say which)."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [
        r
        for name, group in project["optional-dependencies"].items()
        if name != "test"
        for r in group
    ]
    declared = {_requirement_name(r) for r in [*project["dependencies"], *extras]}
    providers = metadata.packages_distributions()
    imported = _third_party_imports([ROOT / "tasks", ROOT / "datamodules"])
    missing = {
        module: providers.get(module)
        for module in imported
        if not {d.lower() for d in providers.get(module, [module])} & declared
    }
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert "keras" not in json.dumps(project["optional-dependencies"]["test"])


def test_json_files_are_strict_and_replace_atomically(tmp_path, monkeypatch):
    from tasks import _files

    path = tmp_path / "summary.json"
    _files.write_json(path, {"metrics": {"test/skill": float("nan"), "test/r2": 0.5}})
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text) == {"metrics": {"test/skill": None, "test/r2": 0.5}}
    assert _files.not_finite({"a": float("inf"), "b": 1.0, "c": float("nan")}) == ["a", "c"]

    def full_disk(fd, *args):  # the disk fills while the new file is written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        _files.write_json(path, {"metrics": {}})
    assert json.loads(path.read_text())["metrics"]["test/r2"] == 0.5  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    """The default run folder is claimed atomically: a second claim of the same date-time
    (another process) gets a suffix; the same process asking again gets its own folder."""
    from tasks.engine import hydra_config as _hydra

    wanted = str(tmp_path / "outputs" / "iris_mlp" / "2026-11-30_10-00-00")
    assert _hydra.claim_new_dir(wanted) == wanted
    assert _hydra.claim_new_dir(wanted) == wanted  # resolved twice in one run: one folder
    monkeypatch.setattr(_hydra, "_CLAIMED", {})  # as another process would start
    assert _hydra.claim_new_dir(wanted) == wanted + "_2"
    monkeypatch.setattr(_hydra, "_CLAIMED", {})
    assert _hydra.claim_new_dir(wanted) == wanted + "_3"
    assert sorted(p.name for p in Path(wanted).parent.iterdir()) == [
        "2026-11-30_10-00-00",
        "2026-11-30_10-00-00_2",
        "2026-11-30_10-00-00_3",
    ]


@pytest.mark.slow
def test_three_cli_runs_started_together_write_three_folders(tmp_path):
    args = [sys.executable, "-m", "tasks", "+task=iris_mlp", "debug=tiny"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = [
        subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0]
    folders = {_run_folder(out) for out in outputs}
    assert len(folders) == 3
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["output_dir"] == str(folder)
        rows = (folder / "metrics.csv").read_text().splitlines()
        assert len({len(r.split(",")) for r in rows}) == 1  # header and rows of one run


def test_a_folder_holding_a_run_is_never_written_into_unless_resuming(tmp_path):
    first = run_cli("+task=iris_mlp", "debug=tiny", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}

    for args in (
        ("+task=iris_mlp", "debug=tiny", "hydra.run.dir=run"),  # train again
        ("+task=iris_mlp", "mode=test", "ckpt_path=run/checkpoints/best.ckpt", "hydra.run.dir=run"),
        ("+task=iris_mlp", "debug=tiny", "output_dir=run", "hydra.run.dir=elsewhere"),
    ):
        again = run_cli(*args, cwd=tmp_path)
        assert again.returncode == 2, again.stderr[-2000:]
        assert "already holds a run (summary.json is there) and would be overwritten" in (
            again.stderr
        )
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before  # not one file of the earlier run touched, .hydra/ included

    resumed = run_cli(
        "+task=iris_mlp",
        "debug=tiny",
        "trainer.max_epochs=3",
        "ckpt_path=run/checkpoints/last.ckpt",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]  # asked for: resume into it


def test_python_api_runs_without_output_dir_get_folders_of_their_own(tmp_path, monkeypatch):
    """tasks.run without output_dir used to write into the current folder: two runs mixed."""
    from tasks.api import compose, run

    monkeypatch.chdir(tmp_path)
    summaries = [run(compose("iris_mlp", ["debug=tiny"])) for _ in range(2)]
    folders = [Path(s["output_dir"]) for s in summaries]
    assert folders[0] != folders[1]
    for folder in folders:
        assert folder.parent == Path("outputs") / "iris_mlp"
        assert (tmp_path / folder / "summary.json").is_file()
    assert not (tmp_path / "summary.json").exists()


def test_named_baselines_show_the_best_one_beside_the_metric():
    """Forecasts and language models have several named baselines (naive_mae,
    seasonal_naive_mae; unigram_loss, bigram_loss): the closing block shows the best of
    them with its name instead of a dash."""
    from tasks.engine.console import end_of_run

    summary = {
        "preset": "p",
        "metrics": {"test/mae": 1.0, "test/r2": 0.9, "test/perplexity": 4.0, "test/skill": 0.5},
        "baseline": {
            "baseline/naive_mae": 3.0,
            "baseline/seasonal_naive_mae": 2.0,
            "baseline/naive_r2": 0.1,
            "baseline/seasonal_naive_r2": 0.3,
            "baseline/unigram_perplexity": 30.0,
            "baseline/bigram_perplexity": 17.0,
        },
    }
    rows = {line.split()[0]: line for line in end_of_run(summary) if line.startswith("  ")}
    assert rows["mae"].endswith("2 (seasonal_naive)")  # lower is better
    assert rows["r2"].endswith("0.3 (seasonal_naive)")  # higher is better
    assert rows["perplexity"].endswith("17 (bigram)")
    assert rows["skill"].split()[-1] == "-"  # no baseline of that metric
