"""Bundles: every built-in problem exports, loads from the bundle alone, predicts what
mode=predict predicts, passes the ONNX parity gate, and refuses a changed bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli, user_data_overrides

from tasks.api import run
from tasks.bundle import (
    BUNDLE_FORMAT,
    compare_records,
    export_bundle,
    load_bundle,
    read_manifest,
)
from tasks.errors import DataError

# one preset per problem
PRESETS = [
    "iris_mlp",
    "diabetes_regression",
    "image_folder",
    "sequence_classification",
    "series_autoencoder",
    "forecast_csv",
    "sentiment_gru",
    "names_lstm",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run per preset: preset -> (run folder, the data overrides)."""
    runs = {}
    mp = pytest.MonkeyPatch()
    for preset in PRESETS:
        data = tmp_path_factory.mktemp(f"{preset}_data")
        overrides = user_data_overrides(preset, data, mp)
        out = tmp_path_factory.mktemp(preset) / "run"
        run(preset, ["debug=tiny", "trainer.accelerator=cpu", f"output_dir={out}", *overrides])
        runs[preset] = (out, overrides, data)
    yield runs
    mp.undo()


@pytest.fixture(scope="module")
def bundles(trained, tmp_path_factory):
    """Each run exported with its ONNX graph."""
    root = tmp_path_factory.mktemp("bundles")
    return {p: export_bundle(run[0], root / p, onnx=True) for p, run in trained.items()}


def _examples(folder):
    read = lambda name: json.loads((folder / name).read_text())  # noqa: E731
    return read("example_input.json"), read("expected_output.json")


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_a_bundle_holds_every_file_and_replays_its_examples(preset, bundles):
    folder = bundles[preset]
    manifest = read_manifest(folder)
    assert manifest["bundle_format"] == BUNDLE_FORMAT
    assert set(manifest["files"]) >= {
        "model.json",
        "weights.safetensors",
        "preprocessing.json",
        "signature.json",
        "example_input.json",
        "expected_output.json",
        "config.yaml",
        "model.onnx",
    }
    assert manifest["training_metrics"]["metrics"]  # the run's test figures travel with it
    examples, expected = _examples(folder)
    assert examples and expected
    for backend in ("torch", "onnx"):
        predictor = load_bundle(folder, backend=backend)
        figures = compare_records(predictor.predict_records(examples), expected, backend)
        assert figures["max_abs_diff"] <= 1e-4
    # the weights are safetensors, not a pickle: the file starts with its JSON header length
    assert (folder / "weights.safetensors").read_bytes()[8:9] == b"{"


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_onnx_parity_is_recorded_for_every_task(preset, bundles):
    parity = read_manifest(bundles[preset])["onnx"]["parity"]
    assert parity["rows"] > 1
    for label in ("batched", "batch_size_1"):
        assert parity[label]["agreement"] == 1.0
        assert parity[label]["max_abs_diff"] <= 1e-3


def _predict_file(preset, data_dir, overrides) -> tuple[str, object]:
    """A file mode=predict reads, and the same inputs as the predictor takes them."""
    option = dict(o.split("=", 1) for o in overrides)
    path = option.get("datamodule.path")
    if preset in ("iris_mlp", "diabetes_regression"):
        from sklearn.datasets import load_diabetes, load_iris

        loader = load_iris if preset == "iris_mlp" else load_diabetes
        frame = loader(as_frame=True).frame.drop(columns="target").head(12)
        file = data_dir / "new_rows.csv"
        frame.to_csv(file, index=False)
        return str(file), frame
    if preset == "image_folder":
        files = sorted(p for p in data_dir.rglob("*.png"))[:6]
        folder = data_dir / "new_images"
        folder.mkdir()
        for i, f in enumerate(files):
            shutil.copy(f, folder / f"{i:02d}.png")
        return str(folder), [str(p) for p in sorted(folder.glob("*.png"))]
    if path is None:  # the synthetic anomaly series: new rows of the same generator
        from datamodules.series import SyntheticSeriesDataModule

        frame = SyntheticSeriesDataModule(generator_seed=7).load_frame()
    else:
        frame = pd.read_csv(path)
    if preset == "sequence_classification":
        rows = frame.drop(columns="label").head(10)
        file = data_dir / "new_sequences.csv"
        rows.to_csv(file, index=False)
        return str(file), rows.to_numpy().tolist()
    if preset == "sentiment_gru":
        texts = frame["text"].head(10)
        file = data_dir / "new_texts.csv"
        texts.to_frame().to_csv(file, index=False)
        return str(file), texts.tolist()
    head = frame.head(200)
    file = data_dir / "new_series.csv"
    head.to_csv(file, index=False)
    return str(file), head


@pytest.mark.slow
@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "names_lstm"])
def test_the_bundle_predicts_what_mode_predict_writes(preset, trained, bundles, tmp_path):
    run_dir, overrides, data_dir = trained[preset]
    file, inputs = _predict_file(preset, data_dir, overrides)
    summary = run(
        preset,
        [
            "mode=predict",
            f"ckpt_path={json.loads((run_dir / 'summary.json').read_text())['best_checkpoint']}",
            f"datamodule.predict_path={file}",
            f"output_dir={tmp_path / 'predict'}",
            *overrides,
        ],
    )
    written = pd.read_csv(summary["predictions"]["path"], index_col="row")
    predicted = load_bundle(bundles[preset]).predict(inputs)
    assert list(predicted.columns) == list(written.columns)
    assert len(predicted) == len(written)
    for column in written.columns:
        a, b = predicted[column].to_numpy(), written[column].to_numpy()
        if np.issubdtype(b.dtype, np.number):
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-4, atol=1e-5)
        else:
            assert [str(x) for x in a] == [str(x) for x in b]


@pytest.mark.slow
def test_a_tampered_weights_file_is_refused(bundles, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(bundles["iris_mlp"], folder)
    data = bytearray((folder / "weights.safetensors").read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    (folder / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(DataError, match="weights.safetensors: its SHA-256 differs"):
        load_bundle(folder)


@pytest.mark.slow
def test_a_newer_bundle_format_is_refused(bundles, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(bundles["iris_mlp"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["bundle_format"] = BUNDLE_FORMAT + 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="newer than this library reads"):
        load_bundle(folder)


@pytest.mark.slow
def test_changed_predictions_fail_the_self_check(bundles, tmp_path):
    """A bundle whose stored answers no longer match its model (edited and re-hashed)."""
    from tasks.bundle import _sha256

    folder = tmp_path / "copy"
    shutil.copytree(bundles["diabetes_regression"], folder)
    expected = json.loads((folder / "expected_output.json").read_text())
    key = next(k for k in expected[0] if isinstance(expected[0][k], float))
    expected[0][key] += 1.0
    (folder / "expected_output.json").write_text(json.dumps(expected))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["expected_output.json"] = _sha256(folder / "expected_output.json")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="bundle self-check"):
        load_bundle(folder)
    assert load_bundle(folder, check=False).predict_records(_examples(folder)[0])


@pytest.mark.slow
def test_a_perturbed_onnx_graph_fails_the_parity_gate(trained, tmp_path, monkeypatch):
    """The gate compares the graph with the torch predictor: a graph exported from
    perturbed weights is refused and no bundle is left behind."""
    import copy

    from tasks import _onnx

    real_export = _onnx._export

    def perturbed(graph, inputs, path, lengths=()):
        broken = copy.deepcopy(graph)
        with torch.no_grad():
            next(broken.parameters()).add_(0.5)
        return real_export(broken, inputs, path, lengths)

    monkeypatch.setattr(_onnx, "_export", perturbed)
    out = tmp_path / "bundle"
    with pytest.raises(DataError, match="ONNX parity gate failed"):
        export_bundle(trained["iris_mlp"][0], out, onnx=True)
    assert not out.exists()
    assert not list(tmp_path.glob(".bundle.*"))  # the staging folder is gone too


@pytest.mark.slow
def test_export_never_overwrites_and_numbers_versions(trained, tmp_path):
    run_dir = trained["iris_mlp"][0]
    first = export_bundle(run_dir, tmp_path / "models", name="iris")
    second = export_bundle(run_dir, tmp_path / "models", name="iris")
    assert (first.name, second.name) == ("1", "2")
    assert first.parent == second.parent == tmp_path / "models" / "iris"
    with pytest.raises(DataError, match="exists and is not empty"):
        export_bundle(run_dir, first)


@pytest.mark.slow
def test_the_cli_exports_and_a_bad_source_is_one_line(trained, tmp_path):
    run_dir = trained["iris_mlp"][0]
    result = run_cli("export", str(run_dir), "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    assert f"bundle written to {tmp_path / 'b'}" in result.stdout
    assert "python -m tasks serve" in result.stdout
    result = run_cli("export", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "no such run folder" in result.stderr
    # the Hydra form: the same implementation
    ckpt = json.loads((run_dir / "summary.json").read_text())["best_checkpoint"]
    summary = run(
        "iris_mlp",
        ["mode=export", f"ckpt_path={ckpt}", f"export.out={tmp_path / 'h'}", "export.version=3"],
    )
    assert summary["bundle"] == str(tmp_path / "h" / "iris_mlp" / "3")
    assert load_bundle(summary["bundle"]).predict_records(_examples(tmp_path / "b")[0])


@pytest.mark.slow
def test_bad_inputs_are_one_line_data_errors(bundles):
    tabular = load_bundle(bundles["iris_mlp"])
    with pytest.raises(DataError):
        tabular.predict([{"nothing": 1}])
    with pytest.raises(DataError, match="expected a non-empty list of records"):
        tabular.predict([])
    images = load_bundle(bundles["image_folder"])
    with pytest.raises(DataError, match="image 1 could not be read"):
        images.predict([_examples(bundles["image_folder"])[0][0], "bm90IGFuIGltYWdl"])
    text = load_bundle(bundles["sentiment_gru"])
    with pytest.raises(DataError, match="input 1 is a int"):
        text.predict(["fine", 3])
    lm = load_bundle(bundles["names_lstm"])
    with pytest.raises(DataError, match="unknown field"):
        lm.predict([{"prefix": "a", "colour": "red"}])


@pytest.mark.slow
def test_a_table_bundle_predicts_a_csv_file_as_mode_predict_reads_it(bundles, tmp_path):
    predictor = load_bundle(bundles["iris_mlp"])
    rows, expected = _examples(bundles["iris_mlp"])
    file = tmp_path / "rows.csv"
    pd.DataFrame(rows).to_csv(file, index=False)
    compare_records(predictor.predict_records(str(file)), expected, "a CSV path")


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_bundle_is_served_as_the_predictor_answers(preset, bundles):
    """A real server per built-in task on 127.0.0.1: its answer to the bundle's examples is
    the predictor's, within the bundle's tolerance."""
    pytest.importorskip("litserve")
    import requests
    from test_serve import Server

    folder = bundles[preset]
    examples, expected = _examples(folder)
    server = Server(folder)
    try:
        reply = server.post("/predict", {"inputs": examples})
        assert reply.status_code == 200, reply.text
        compare_records(reply.json()["predictions"], expected, f"server ({preset})")
        info = requests.get(server.url + "/info", timeout=10).json()["model"]
        assert info["signature"]["inputs"]["kind"] == read_manifest(folder)["input_kind"]
    finally:
        server.stop()
