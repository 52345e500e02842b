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
    onnx = read_manifest(bundles[preset])["onnx"]
    # the TorchScript fallback is for networks dynamo cannot trace; none of ours needs it
    assert onnx["exporter"] == "dynamo"
    # numeric preprocessing lives in the graph; token ids and uint8 pixels go in as they are
    assert onnx["raw_inputs"] == (preset not in ("image_folder", "sentiment_gru", "names_lstm"))
    parity = onnx["parity"]
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


# -- the ONNX graph starts from raw values -------------------------------------------------
def test_the_table_encoder_is_the_preprocessor_in_torch():
    """Imputation, missing indicators, log1p, standardisation and one-hot encoding give in
    torch what the pandas preprocessor gives, and ``raw`` inverts them."""
    from datamodules._graph import TableEncoder
    from datamodules._table_prep import TablePreprocessor

    rng = np.random.default_rng(0)
    n = 80
    frame = pd.DataFrame(
        {
            "count": rng.poisson(30, n).astype(float),
            "level": rng.normal(-50, 1000, n),  # negative values: no log1p
            "colour": rng.choice(["red", "green", "blue"], n),
            "city": [f"c{i}" for i in rng.integers(0, 40, n)],
        }
    )
    frame.loc[[3, 17], "count"] = np.nan
    frame.loc[5, "colour"] = None
    types = {"count": "numeric", "level": "numeric", "colour": "categorical", "city": "categorical"}
    prep = TablePreprocessor().fit(frame.iloc[:60], list(types), types, transform="log1p")
    assert prep.state["onehot"] == ["colour"] and prep.state["embedded"] == ["city"]
    assert prep.state["indicators"] == ["count"] and prep.state["log1p"] == ["count"]
    unseen = frame.copy()
    unseen.loc[70, "colour"] = "purple"  # the unknown bucket, as in training
    numeric, categorical = prep.transform(unseen, "test")
    numbers, codes = prep.raw_inputs(unseen, "test")
    encoder = TableEncoder(prep.state)
    got_numeric, got_categorical = encoder(torch.from_numpy(numbers), torch.from_numpy(codes))
    assert torch.allclose(got_numeric, numeric, atol=1e-6)
    assert torch.equal(got_categorical, categorical)
    assert got_numeric[70, -4].item() == 1.0  # colour=<unknown>, the first one-hot column
    raw_numbers, raw_codes = encoder.raw(numeric, categorical)
    assert np.isnan(raw_numbers[[3, 17], 0].numpy()).all()
    again = encoder(raw_numbers, raw_codes)
    assert torch.allclose(again[0], numeric, atol=1e-5) and torch.equal(again[1], categorical)


def _session(folder):
    import onnxruntime as ort

    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_an_onnx_user_feeds_a_table_in_original_units(bundles):
    """onnxruntime alone (no library code between) on raw rows, a value missing, answers
    what the bundle's predictor answers for the same rows."""
    from sklearn.datasets import load_iris

    folder = bundles["iris_mlp"]
    onnx = read_manifest(folder)["onnx"]
    assert onnx["raw_inputs"] and onnx["exporter"] == "dynamo"
    numbers, *codes = onnx["inputs"]
    rows = load_iris(as_frame=True).frame.drop(columns="target").iloc[::15].copy()
    rows.iloc[2, 1] = np.nan
    feed = {numbers["name"]: rows[numbers["columns"]].to_numpy(np.float64)}
    for entry in codes:  # iris has no categorical column: the codes are (rows, 0)
        assert entry["columns"] == [] and entry["dtype"] == "int64"
        feed[entry["name"]] = np.zeros((len(rows), 0), np.int64)
    pred, prob = _session(folder).run(onnx["outputs"], feed)
    expected = load_bundle(folder).predict(rows)
    classes = [c.removeprefix("prob_") for c in expected.columns if c.startswith("prob_")]
    assert np.allclose(prob, expected[[f"prob_{c}" for c in classes]].to_numpy(), atol=1e-5)
    assert [classes[i] for i in pred] == expected["pred"].tolist()


@pytest.mark.slow
def test_an_onnx_user_feeds_forecast_windows_in_original_units(bundles):
    from datamodules.forecast import calendar_features

    folder = bundles["forecast_csv"]
    onnx = read_manifest(folder)["onnx"]
    assert onnx["raw_inputs"]
    records = json.loads((folder / "example_input.json").read_text())
    values_input, *calendar_input = onnx["inputs"]
    columns = values_input["columns"]
    time_column = json.loads((folder / "signature.json").read_text())["inputs"]["time_column"]
    frame = pd.DataFrame(records)
    feed = {values_input["name"]: frame[columns].to_numpy(np.float64)[None]}
    if calendar_input:
        time = pd.DatetimeIndex(pd.to_datetime(frame[time_column]))
        features = calendar_features(time, calendar_input[0]["columns"])
        feed[calendar_input[0]["name"]] = features.astype(np.float32)[None]
    (pred,) = _session(folder).run(["pred"], feed)
    expected = load_bundle(folder).predict(records)
    target = columns[0]
    assert np.allclose(pred[0, :, 0], expected[target].to_numpy(), rtol=1e-4, atol=1e-4)


def test_encoders_of_tables_without_numbers_and_of_flat_sequences():
    """A table of categories only (no numeric column) encodes and inverts; a constant
    sequence standardised per sequence is flat zeros in the datamodule and in the graph."""
    from datamodules._graph import AffineEncoder, TableEncoder
    from datamodules._table_prep import TablePreprocessor
    from datamodules.sequence import SequenceDataModule

    frame = pd.DataFrame({"colour": ["red", "green", "blue", "red"] * 5, "size": ["s", "m"] * 10})
    types = {"colour": "categorical", "size": "categorical"}
    prep = TablePreprocessor().fit(frame, list(types), types)
    numeric, categorical = prep.transform(frame, "t")
    encoder = TableEncoder(prep.state)
    raw = encoder.raw(numeric, categorical)
    assert raw[0].shape == (20, 0)
    again = encoder(*raw)
    assert torch.equal(again[0], numeric) and torch.equal(again[1], categorical)

    rows = np.stack([np.full((1, 50), 0.1), np.linspace(0, 1, 50)[None]])
    dm = SequenceDataModule(path="unused.csv", normalize="per_sequence")
    ours = dm._transform(rows.copy())
    graph = AffineEncoder([], [], 1, "rows", per_row=True)(torch.from_numpy(rows))
    assert float(ours[0].abs().max()) < 1e-12  # flat, not rounding noise / rounding noise
    assert torch.allclose(graph, ours, atol=1e-6)
