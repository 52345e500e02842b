"""Sequence classification: CSV layouts, arrays, bundled GunPoint, the curves generator,
bad input, the reference networks, run artefacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from datamodules.base import split_indices
from datamodules.sequence import CurvesDataModule, SequenceDataModule, interpolate_gaps
from tasks.api import compose, run
from tasks.errors import ConfigError, DataError
from tasks.nets.sequence import build_sequence_net
from tasks.sequence import SequenceClassification


def _ucr(tmp_path, rows: list[str], name: str = "s.csv"):
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _table(n=30, steps=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, steps)) + y[:, None] * 2.0
    return x, y


def test_ucr_layout_is_read_with_string_labels(tmp_path):
    x, y = _table()
    rows = ["label," + ",".join(f"t_{i}" for i in range(8))]
    rows += [f"{'up' if k else 'down'}," + ",".join(map(str, r)) for r, k in zip(x, y)]
    dm = SequenceDataModule(path=_ucr(tmp_path, rows), val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert dm.class_names == ["down", "up"]
    assert dm.data_facts() == {
        "num_classes": 2,
        "in_channels": 1,
        "seq_len": 8,
        "class_counts": [9, 9],
    }
    assert sum(len(d[1]) for d in (dm.train_data, dm.val_data, dm.test_data)) == 30


def test_column_layout_with_two_channels(tmp_path):
    x, y = _table(steps=6)
    header = "id,a0,a1,a2,b0,b1,b2,kind"
    rows = [header] + [
        f"{i}," + ",".join(map(str, r)) + f",{k}" for i, (r, k) in enumerate(zip(x, y))
    ]
    dm = SequenceDataModule(
        path=_ucr(tmp_path, rows),
        layout="columns",
        target="kind",
        features=["a0", "a1", "a2", "b0", "b1", "b2"],
        channels=2,
    )
    dm.setup("fit")
    assert dm.train_data[0].shape[1:] == (2, 3)


def test_arrays_from_python_and_a_rebuild_from_state():
    x, y = _table()
    dm = SequenceDataModule(arrays=(x[:, None, :], y), normalize="global")
    dm.setup("fit")
    assert abs(float(dm.train_data[0].mean())) < 0.2
    restored = SequenceDataModule(arrays=(x[:, None, :] + 100, y))
    restored.load_state_dict(dm.state_dict())
    restored.setup("fit")  # keeps the saved statistics instead of refitting them
    assert float(restored.train_data[0].mean()) > 50


def test_global_normalisation_comes_from_the_training_split_only():
    rng = np.random.default_rng(1)
    y = np.arange(60) % 2
    x = rng.normal(size=(60, 2, 8)) * [[2.0], [0.5]] + [[1.0], [-3.0]]
    train, val, test = split_indices(60, 0.2, 0.2, seed=5, stratify=y)
    x[np.concatenate([val, test])] += 100.0  # held-out rows far away: they must not count
    dm = SequenceDataModule(
        arrays=(x, y), normalize="global", val_fraction=0.2, test_fraction=0.2, seed=5
    )
    dm.setup("fit")
    mean, std = x[train].mean(axis=(0, 2)), x[train].std(axis=(0, 2))
    np.testing.assert_allclose(dm.fitted_state["mean"], mean)
    np.testing.assert_allclose(dm.fitted_state["std"], std)
    for data, rows in ((dm.train_data, train), (dm.val_data, val), (dm.test_data, test)):
        expected = (x[rows] - mean[:, None]) / std[:, None]
        np.testing.assert_allclose(data[0].numpy(), expected, rtol=1e-5, atol=1e-4)
    assert dm.fitted_state["class_counts"] == np.bincount(y[train]).tolist()


def test_bundled_gunpoint_is_the_official_split():
    dm = SequenceDataModule(dataset="gunpoint", normalize="per_sequence")
    dm.setup("fit")
    assert len(dm.train_data[1]) + len(dm.val_data[1]) == 50 and len(dm.test_data[1]) == 150
    assert dm.class_names == ["1", "2"] and dm.data_facts()["seq_len"] == 150


def test_curves_generator_is_balanced_seeded_and_documented_shape():
    a = CurvesDataModule(curves=200, generator_seed=3).load_arrays()["train"]
    b = CurvesDataModule(curves=200, generator_seed=3).load_arrays()["train"]
    assert np.array_equal(a[0], b[0]) and a[0].shape == (200, 1, 200)
    assert a[1].sum() == 100
    x, y = a
    rough = np.diff(x[:, 0], axis=1).std(axis=1)
    assert rough[y == 1].mean() > rough[y == 0].mean()  # anomalies are rough local bursts


def test_nan_policy_and_ragged_rows(tmp_path):
    rows = ["label,t0,t1,t2,t3", "a,1,,3,4", "b,1,2,3,4", "a,0,1,2,3", "b,5,6,7,8"] * 3
    rows = [rows[0]] + [r for r in rows if not r.startswith("label")]
    path = _ucr(tmp_path, rows)
    with pytest.raises(DataError, match=r"contain NaN .*datamodule.nan=interpolate"):
        SequenceDataModule(path=path).setup("fit")
    dm = SequenceDataModule(path=path, nan="interpolate", val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert not torch.isnan(dm.train_data[0]).any()
    assert np.allclose(interpolate_gaps(np.array([[np.nan, 1.0, np.nan, 3.0]])), [[1, 1, 2, 3]])
    ragged = _ucr(tmp_path, ["label,t0,t1,t2", "a,1,2,3", "b,1,2", "a,1,2,3", "b,4,5,6"], "r.csv")
    with pytest.raises(DataError, match=r"ragged rows: line\(s\) \[3\] are shorter"):
        SequenceDataModule(path=ragged).setup("fit")
    longer = _ucr(tmp_path, ["label,t0,t1", "a,1,2", "b,1,2,3,4"], "l.csv")
    with pytest.raises(
        DataError, match="not a readable table: .*Expected 3 fields in line 3, saw 5"
    ):
        SequenceDataModule(path=longer).setup("fit")


def test_more_classes_than_expected_and_wrong_layout(tmp_path):
    rows = ["label,t0,t1"] + [f"{k},{k},{k + 1}" for k in range(5)] * 3
    with pytest.raises(DataError, match=r"has 5 classes .* datamodule.expected_classes=2"):
        SequenceDataModule(path=_ucr(tmp_path, rows), expected_classes=2).setup("fit")
    text = ["t0,t1,label"] + ["1,2,x", "3,4,y"] * 5
    with pytest.raises(DataError, match="not numeric .*datamodule.layout=label_first"):
        SequenceDataModule(path=_ucr(tmp_path, text, "t.csv")).setup("fit")
    with pytest.raises(ConfigError, match="layout=columns needs datamodule.target"):
        SequenceDataModule(path="x.csv", layout="columns")


def test_reference_networks_and_unknown_names():
    for name in ("mlp", "features_mlp", "conv1d", "resnet1d", "gru"):
        net = build_sequence_net(name, 2, 3, 40)
        assert net(torch.randn(5, 2, 40)).shape == (5, 3)
    with pytest.raises(ConfigError, match="Did you mean 'conv1d'"):
        build_sequence_net("conv1", 1, 2, 40)
    with pytest.raises(ConfigError, match="at least 12 steps"):
        build_sequence_net("conv1d", 1, 2, 8)


def test_curves_run_writes_sequence_artefacts(tmp_path):
    cfg = compose(
        "curves_conv1d", ["debug=tiny", "datamodule.curves=200", f"output_dir={tmp_path}"]
    )
    summary = run(cfg)
    assert {"test/acc", "test/auroc", "test/f1"} <= set(summary["metrics"])
    for name in ("example_sequences.png", "confusion_matrix.csv"):
        assert (tmp_path / name).is_file()
    task = SequenceClassification.load_from_checkpoint(summary["best_checkpoint"])
    assert task.hparams.network == "conv1d" and task.hparams.seq_len == 200


def test_channel_blocks_and_unknown_test_labels_are_named(tmp_path):
    rows = ["label,a0,a1,a2"] + ["x,1,2,3", "y,4,5,6"] * 5
    with pytest.raises(DataError, match="3 value columns do not split into datamodule.channels=2"):
        SequenceDataModule(path=_ucr(tmp_path, rows), channels=2).setup("fit")
    test = _ucr(tmp_path, ["label,a0,a1,a2", "x,1,2,3", "z,1,2,3"], "test.csv")
    dm = SequenceDataModule(path=_ucr(tmp_path, rows), test_path=test, val_fraction=0.2)
    with pytest.raises(DataError, match=r"test labels: labels \['z'\] were not in the training"):
        dm.setup("fit")
    with pytest.raises(DataError, match="no label column 'kind'"):
        SequenceDataModule(path=_ucr(tmp_path, rows), layout="columns", target="kind").setup("fit")


def test_sequence_augmentation_only_reverses_or_negates_during_training():
    from tasks.sequence import SequenceClassification, augment_sequences

    torch.manual_seed(0)
    x = torch.randn(64, 2, 10)
    out = augment_sequences(x, reverse=True, negate=True, noise=0.0)
    variants = [x, x.flip(-1), -x, -x.flip(-1)]
    used = set()
    for i in range(len(x)):
        matches = [k for k, v in enumerate(variants) if torch.equal(out[i], v[i])]
        assert matches, f"row {i} is not a reversed/negated copy"
        used.add(matches[0])
    assert used == {0, 1, 2, 3}
    noisy = augment_sequences(x, reverse=False, negate=False, noise=0.5)
    assert 0.4 < float((noisy - x).std()) < 0.6

    task = SequenceClassification(in_channels=2, seq_len=10, augment={"negate": True})
    batch = (x, torch.zeros(64, dtype=torch.long))
    assert task.on_after_batch_transfer(batch, 0) is batch  # no trainer: evaluation untouched
    with pytest.raises(ConfigError, match=r"unknown keys \['flip'\]"):
        SequenceClassification(augment={"flip": True})


def _headerless(tmp_path, n=20, name="ucr.csv", edit=None, repeats=True):
    """A real UCR file: no header, numeric labels 1/2, values with repeats in line 1."""
    x, y = _table(n=n, steps=6)
    if repeats:  # as a header they would be duplicate column names
        x[0, :3] = 0.0
    rows = [f"{k + 1}," + ",".join(f"{v:g}" for v in r) for r, k in zip(x, y)]
    for line, text in (edit or {}).items():
        rows[line - 1] = text
    return _ucr(tmp_path, rows, name)


def _sequences(dm) -> int:
    return sum(len(d[1]) for d in (dm.train_data, dm.val_data, dm.test_data) if d is not None)


def test_a_headerless_ucr_file_keeps_its_first_sequence_and_says_so(tmp_path, caplog):
    path = _headerless(tmp_path)
    with caplog.at_level("INFO", logger="datamodules.sequence"):
        dm = SequenceDataModule(path=path, val_fraction=0.2, test_fraction=0.2)
        dm.setup("fit")
    assert _sequences(dm) == 20
    assert dm.class_names == ["1", "2"]
    assert "read without a header (line 1 holds numbers)" in caplog.text
    path = _headerless(tmp_path, name="plain.csv", repeats=False)
    explicit = SequenceDataModule(path=path, header=True, val_fraction=0.2, test_fraction=0.2)
    explicit.setup("fit")  # header=true: line 1 is taken as the column names
    assert _sequences(explicit) == 19
    semicolons = tmp_path / "semicolons.csv"
    semicolons.write_text(Path(path).read_text().replace(",", ";"))
    for header in ("auto", False):
        dm = SequenceDataModule(path=str(semicolons), header=header, test_fraction=0.2)
        dm.setup("fit")
        assert _sequences(dm) == 20
    # a headerless file to predict, without labels, keeps its first sequence too
    x, _ = _table(n=4, steps=6)
    unlabelled = _ucr(tmp_path, [",".join(f"{v:g}" for v in r) for r in x], "new.csv")
    dm = SequenceDataModule(path=path, predict_path=unlabelled)
    dm.setup("fit")
    dm.setup("predict")
    assert dm.predict_data[0].shape == (4, 1, 6)


def test_header_detection_and_file_line_numbers(tmp_path, caplog):
    steps = ["label,0,1,2,3,4,5"] + [f"{k % 2},1,2,3,4,5,{k}" for k in range(10)]
    with caplog.at_level("INFO", logger="datamodules.sequence"):
        dm = SequenceDataModule(path=_ucr(tmp_path, steps, "steps.csv"))
        dm.setup("fit")
    assert "line 1 is read as the header (its fields are step numbers)" in caplog.text
    assert dm.data_facts()["seq_len"] == 6
    gap = _headerless(tmp_path, name="gap.csv", edit={5: "1,0.1,,0.3,0.4,0.5,0.6"})
    with pytest.raises(DataError, match=r"1 sequence\(s\) contain NaN \(first line\(s\) \[5\]\)"):
        SequenceDataModule(path=gap).setup("fit")
    short = _headerless(tmp_path, name="short.csv", edit={7: "2,1,2,3"})
    with pytest.raises(DataError, match=r"short.csv': ragged rows: line\(s\) \[7\] are shorter"):
        SequenceDataModule(path=short).setup("fit")
    with pytest.raises(ConfigError, match="datamodule.header='yes'; expected auto, true"):
        SequenceDataModule(path="x.csv", header="yes")
    with pytest.raises(ConfigError, match="header=false needs datamodule.layout=label_first"):
        SequenceDataModule(path="x.csv", layout="columns", target="y", header=False)


def test_a_word_among_numeric_labels_is_named_with_its_line(tmp_path):
    typo = _headerless(tmp_path, name="typo.csv", edit={9: "abc,1,2,3,4,5,6"})
    with pytest.raises(
        DataError,
        match=r"the labels are numbers except 'abc' on line\(s\) \[9\] \(1 of 20 rows\); "
        "correct those labels or remove the rows$",
    ):
        SequenceDataModule(path=typo).setup("fit")
    first = _headerless(tmp_path, name="first.csv", edit={1: "abc,0.5,2,3,4,5,6"})
    with pytest.raises(DataError, match=r"\[1\] .*if line 1 names the columns, set datamodule"):
        SequenceDataModule(path=first).setup("fit")
    named = _ucr(tmp_path, ["label,10,20,30"] + ["up,1,2,3", "down,3,2,1"] * 5, "named.csv")
    with pytest.raises(DataError, match="line 1 holds the only 'label' label; if line 1 names"):
        SequenceDataModule(path=named).setup("fit")
    dm = SequenceDataModule(path=named, header=True)
    dm.setup("fit")
    assert dm.class_names == ["down", "up"]
    unlabelled = _headerless(tmp_path, name="nolabel.csv", edit={4: ",1,2,3,4,5,6"})
    with pytest.raises(DataError, match=r"1 sequence\(s\) have no label \(line\(s\) \[4\]\)"):
        SequenceDataModule(path=unlabelled).setup("fit")


def test_a_word_among_numeric_labels_ends_the_cli_with_one_line(tmp_path):
    typo = _headerless(tmp_path, n=40, name="typo.csv", edit={31: "abc,1,2,3,4,5,6"})
    result = run_cli(
        "+task=sequence_classification",
        f"datamodule.path={typo}",
        "debug=tiny",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 2, result.stderr
    assert "error: datamodule.path" in result.stderr
    assert "labels are numbers except 'abc' on line(s) [31] (1 of 40 rows)" in result.stderr
