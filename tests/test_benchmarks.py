"""The benchmark script runs end to end on a tiny scale (its figures are not asserted:
speed goals live in benchmarks/, not in timed unit tests)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import ROOT


def load_overhead():
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "benchmarks" / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["overhead"] = module  # its epoch timer is found by name, as Hydra targets are
    spec.loader.exec_module(module)
    return module


def run_tiny(tmp_path, *cases: str, extra: tuple[str, ...] = ()) -> tuple[list[dict], str]:
    """The benchmark on a tenth of the data, one round of two epochs: its rows and table."""
    out, table = tmp_path / "figures.json", tmp_path / "table.md"
    load_overhead().main(
        ["--cases", *cases, "--rounds", "1", "--epochs", "2", "--scale", "0.1", "--no-startup"]
        + [*extra, "--json", str(out), "--markdown", str(table)]
    )
    return json.loads(out.read_text())["cases"], table.read_text()


def test_overhead_benchmark_compares_library_and_loop_on_the_same_network(tmp_path):
    rows, table = run_tiny(tmp_path, "spam_mlp", "char_lstm")
    assert [row["case"] for row in rows] == ["spam_mlp", "char_lstm"]
    for row in rows:
        assert row["library_s"] > 0 and row["loop_s"] > 0 and row["epochs_timed"] == 1
        assert row["ratio"] == row["library_s"] / row["loop_s"]
    assert "| spam_mlp (" in table and "library / loop" in table


def test_keras_comparison_runs_on_the_same_arrays(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # before keras is first imported
    pytest.importorskip("keras")
    (row,), table = run_tiny(tmp_path, "curves_conv1d", extra=("--keras",))
    assert row["keras_s"] > 0 and row["keras_ratio"] == row["keras_s"] / row["loop_s"]
    assert "keras / loop" in table


def test_epoch_timer_counts_the_work_between_epochs(monkeypatch):
    """Checkpoint writes and loggers run after ``on_train_epoch_end``: an epoch is timed from
    its start to the next one's (the last to the end of training), so they count."""
    overhead = load_overhead()
    clock = iter([0.0, 1.5, 4.0])
    monkeypatch.setattr(overhead.time, "perf_counter", lambda: next(clock))
    timer = overhead.epoch_timer_class()
    timer.times = []
    callback = timer()
    callback.on_train_epoch_start(None, None)
    callback.on_train_epoch_end(None, None)  # not the end of the timed span
    callback.on_train_epoch_start(None, None)
    callback.on_train_end(None, None)
    assert timer.times == [1.5, 2.5]


def test_real_data_benchmark_puts_the_preset_beside_its_peers(tmp_path):
    """One bundled scikit-learn table, one seed, one epoch: the preset and both peers are
    scored on the library's own test rows and land in the table."""
    spec = importlib.util.spec_from_file_location("real_data", ROOT / "benchmarks" / "real_data.py")
    real_data = importlib.util.module_from_spec(spec)
    sys.modules["real_data"] = real_data  # its dataclasses look their module up by name
    spec.loader.exec_module(real_data)
    out, table = tmp_path / "real.json", tmp_path / "real.md"
    args = ["--only", "wine", "--quick", "--epochs", "1", "--cache", str(tmp_path / "cache")]
    real_data.main([*args, "--json", str(out), "--markdown", str(table)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["dataset"] == "wine" and row["seeds"] == 1 and row["metric"] == "acc"
    assert 0.0 <= row["preset_mean"] <= 1.0
    (run,) = json.loads(out.read_text())["runs"]
    peers = {"linear", "hgb"} if run["peer_source"] == "script" else set(run["peers"])
    assert peers and peers <= set(row["peers"]) and row["verdict"] in {"ahead", "on par", "behind"}
    header = table.read_text().splitlines()[0]
    assert "| preset |" in header and all(f"| {name} |" in header for name in peers)
    assert "| wine |" in table.read_text()


@pytest.mark.slow
def test_time_to_quality_times_both_sides_from_process_start(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    pytest.importorskip("keras")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # it imports overhead.py
    spec = importlib.util.spec_from_file_location(
        "time_to_quality", ROOT / "benchmarks" / "time_to_quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "time_to_quality", module)  # for its dataclasses
    spec.loader.exec_module(module)
    out = tmp_path / "ttq.json"
    argv = ["--cases", "spam_mlp", "--epochs-scale", "0.002", "--seeds", "2"]
    module.main([*argv, "--json", str(out)])
    (row,) = json.loads(out.read_text())["cases"]
    assert row["library_s"] > 0 and row["keras_s"] > 0
    assert row["ratio"] == pytest.approx(row["library_s"] / row["keras_s"])
    # one paired run a seed (each its own split), averaged
    assert row["seeds"] == [0, 1] and len(row["library_figures"]) == len(row["keras_figures"]) == 2
    assert row["library_figure"] == pytest.approx(sum(row["library_figures"]) / 2)
    assert all(0.5 < f <= 1 for f in row["library_figures"])
    assert all(0.3 < f <= 1 for f in row["keras_figures"])
    assert "seed=" not in row["command"]


@pytest.mark.slow
def test_text_cache_benchmark_reads_no_text_on_the_reused_cache(tmp_path):
    import subprocess

    command = [sys.executable, str(ROOT / "benchmarks" / "text_cache.py"), "--mb", "0.3"]
    command += ["--epochs", "2", "--rows-per-epoch", "64", "--folder", str(tmp_path / "bench")]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [
        line.split("|")
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "|---" not in line
    ][1:]
    assert [r[1].strip() for r in rows] == [
        "in memory",
        "disk cache, first run",
        "disk cache, reused",
    ]
    reads = [r[7].strip() for r in rows]
    assert reads[0].startswith("1 ") and reads[2].startswith("0 "), reads
    assert len({r[8].strip() for r in rows}) == 1  # the same test perplexity on all three


@pytest.mark.slow
def test_disk_cache_benchmark_reads_no_image_file_while_training(tmp_path):
    import subprocess

    folder = tmp_path / "bench" / "images"
    command = [sys.executable, str(ROOT / "benchmarks" / "disk_cache.py"), "--images", "60"]
    command += ["--size", "16", "--rows-per-epoch", "20", "--epochs", "2", "--batch", "8"]
    done = subprocess.run([*command, "--folder", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [
        line for line in done.stdout.splitlines() if line.startswith("| ") and "|---" not in line
    ]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "in memory",
        "disk cache, first run",
        "disk cache, reused",
    ]
    opened = [r.split("|")[6].strip() for r in rows[1:]]
    assert all(o.endswith("/ 0") for o in opened), opened  # no file read during training
    assert len(list(folder.rglob("*.png"))) == 60


def test_text_table_memory_benchmark_compares_the_same_ids_both_ways():
    """Whole-table against chunked tokenising, each in its own process: the same training
    ids either way, and the table the script prints."""
    import subprocess

    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "text_table_memory.py"),
        "--docs",
        "200",
        "--tweets-per-doc",
        "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| whole table at once (before) |" in done.stdout
    assert "| chunks (now) |" in done.stdout
    assert "same training ids: True" in done.stdout
