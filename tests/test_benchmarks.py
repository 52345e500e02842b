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


def test_overhead_benchmark_compares_library_and_loop_on_the_same_network(tmp_path):
    overhead = load_overhead()
    out = tmp_path / "figures.json"
    overhead.main(
        [
            "--cases",
            "spam_mlp",
            "char_lstm",
            "--rounds",
            "1",
            "--epochs",
            "2",
            "--scale",
            "0.1",
            "--no-startup",
            "--json",
            str(out),
            "--markdown",
            str(tmp_path / "table.md"),
        ]
    )
    figures = json.loads(out.read_text())
    assert [row["case"] for row in figures["cases"]] == ["spam_mlp", "char_lstm"]
    for row in figures["cases"]:
        assert row["library_s"] > 0 and row["loop_s"] > 0 and row["epochs_timed"] == 1
        assert row["ratio"] == row["library_s"] / row["loop_s"]
    table = (tmp_path / "table.md").read_text()
    assert "| spam_mlp (" in table and "library / loop" in table


def test_keras_comparison_runs_on_the_same_arrays(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # before keras is first imported
    pytest.importorskip("keras")
    overhead = load_overhead()
    out = tmp_path / "figures.json"
    overhead.main(
        [
            "--cases",
            "curves_conv1d",
            "--rounds",
            "1",
            "--epochs",
            "2",
            "--scale",
            "0.1",
            "--no-startup",
            "--keras",
            "--json",
            str(out),
            "--markdown",
            str(tmp_path / "t.md"),
        ]
    )
    (row,) = json.loads(out.read_text())["cases"]
    assert row["keras_s"] > 0 and row["keras_ratio"] == row["keras_s"] / row["loop_s"]
    assert "keras / loop" in (tmp_path / "t.md").read_text()
