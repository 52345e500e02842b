"""The data doctor (tasks.doctor): it finds problems planted in generated tables, image
folders, texts and series, reports none of them in clean data, and its command line
writes doctor.md/doctor.json and exits 0, 1 (--strict with warnings) or 2 (cannot train)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    make_table,
    make_texts,
    write_demand_csv,
    write_image_folder,
    write_ucr_csv,
)

from tasks.api import compose
from tasks.doctor import Report, diagnose, diagnose_datamodule, main, write
from tasks.engine.runner import build_datamodule

#: the kinds of finding that name a problem (clean data must show none of them)
PROBLEMS = {
    "id_like",
    "constant",
    "leak",
    "duplicate_rows",
    "cross_split_duplicates",
    "class_too_small",
    "imbalance",
    "unseen_categories",
    "drift",
    "missing",
    "image_size",
    "corrupt_image",
    "near_duplicate_images",
    "empty_text",
    "duplicate_text",
    "vocab_coverage",
    "gaps",
    "series_duplicates",
    "constant_stretch",
    "outliers",
    "setup_failed",
}


def _table(tmp_path: Path, *overrides: str, preset: str = "tabular_classification") -> Report:
    return diagnose(compose(preset, [f"datamodule.path={tmp_path / 'table.csv'}", *overrides]))


def _found(report: Report, kind: str, *words: str) -> list:
    """The findings of ``kind`` whose text names every one of ``words``."""
    return [f for f in report.findings if f.kind == kind and all(w in f.what for w in words)]


def _clean(report: Report) -> None:
    assert not report.facts.get("checks_not_run"), report.facts["checks_not_run"]
    problems = [f for f in report.findings if f.kind in PROBLEMS]
    assert not problems, "\n".join(report.lines())


# -- tables -------------------------------------------------------------------------------------
def _planted_table(tmp_path: Path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = make_table(300, seed=1)
    frame["city"] = rng.choice(["paris", "rome", "oslo", "lima"], len(frame))
    frame["const"] = 1.0
    frame["label_copy"] = frame["label"].map({"no": 0, "yes": 1})
    rare = frame.iloc[:2].assign(label="maybe", label_copy=2)  # a class of two rows
    frame = pd.concat([frame, frame.iloc[10:50], rare], ignore_index=True)  # 40 repeated rows
    frame.insert(0, "row_id", rng.permutation(len(frame)))  # a shuffled row number
    frame.to_csv(tmp_path / "table.csv", index=False)
    return frame


def test_doctor_finds_the_problems_planted_in_a_table(tmp_path):
    _planted_table(tmp_path)
    report = _table(tmp_path, "datamodule.target=label")
    assert report.can_train and not report.facts.get("checks_not_run")
    (id_like,) = _found(report, "id_like", "'row_id'")
    assert id_like.severity == "warning" and "row_id" in id_like.option
    (constant,) = _found(report, "constant", "'const'")
    assert constant.option == "datamodule.drop_columns=[const]"
    (leak,) = _found(report, "leak", "'label_copy'")
    assert leak.severity == "warning" and "label_copy" in leak.option
    assert not _found(report, "leak", "'a'")  # a strong feature is no leak
    (duplicates,) = _found(report, "cross_split_duplicates")
    assert duplicates.severity == "warning" and "repeat a training row" in duplicates.what
    assert _found(report, "duplicate_rows", "40 rows")
    (small,) = _found(report, "class_too_small", "'maybe'", "2 rows")
    columns = report.facts["columns"]
    assert columns["row_id"]["role"].startswith("left out")
    assert columns["label"]["role"] == "target" and columns["city"]["type"] == "categorical"
    assert report.facts["classes"]["maybe"] == {"train": 2, "val": 0, "test": 0}


def test_doctor_checks_a_test_file_against_the_training_rows(tmp_path):
    frame = _planted_table(tmp_path)
    test = make_table(80, seed=7)
    test["city"] = np.where(np.arange(80) % 4 == 0, "lyon", "rome")  # lyon: never in training
    test["const"] = 1.0
    test["label_copy"] = test["label"].map({"no": 0, "yes": 1})
    test["c"] = test["c"] + 5.0  # drift
    test.insert(0, "row_id", np.arange(80))
    test = pd.concat([test, frame.iloc[100:110]], ignore_index=True)  # training rows again
    test.to_csv(tmp_path / "test.csv", index=False)
    report = _table(
        tmp_path, "datamodule.target=label", f"datamodule.test_path={tmp_path}/test.csv"
    )
    (unseen,) = _found(report, "unseen_categories", "datamodule.test_path", "'city'", "'lyon'")
    assert unseen.severity == "warning"
    (drift,) = _found(report, "drift", "datamodule.test_path", "'c'")
    assert report.facts["drift"]["datamodule.test_path"]["c"]["mean_shift_sd"] > 3
    assert not _found(report, "drift", "'a'")  # the same distribution is no drift
    assert _found(report, "cross_split_duplicates", "datamodule.test_path")
    assert report.facts["sizes"]["test_path"] == 90


def test_doctor_finds_a_near_copy_of_a_regression_target(tmp_path):
    frame = make_table(200, seed=2).drop(columns="label")
    rng = np.random.default_rng(0)
    frame["y"] = 3 * frame["a"] + frame["b"] + rng.normal(0, 0.5, len(frame))
    frame["y_inches"] = frame["y"] / 2.54 + rng.normal(0, 0.01, len(frame))
    frame.to_csv(tmp_path / "table.csv", index=False)
    report = _table(tmp_path, "datamodule.target=y", preset="tabular_regression")
    assert [f.what.split("'")[1] for f in report.findings if f.kind == "leak"] == ["y_inches"]


def _clean_table(n: int, seed: int) -> pd.DataFrame:
    """Realistic clean rows: normal and skewed numbers, integer ages and counts, categories
    that repeat (unevenly), a label that depends on several of them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "height": rng.normal(170, 10, n).round(1),
            "age": rng.integers(18, 90, n),
            "income": rng.lognormal(10, 0.8, n).round(2),  # skewed, valid
            "visits": rng.poisson(3, n),
            "city": rng.choice(
                ["paris", "rome", "oslo", "lima", "kyiv"], n, p=[0.3, 0.25, 0.2, 0.15, 0.1]
            ),
            "member": rng.choice([True, False], n),
        }
    )
    score = (frame.height - 170) / 10 + np.log(frame.income) - 10 + rng.normal(0, 1, n)
    frame["label"] = np.where(score > 0, "yes", "no")
    frame["spend"] = 0.002 * frame.income + 5 * frame.visits + rng.normal(0, 40, n)
    return frame


@pytest.mark.parametrize("preset", ["tabular_classification", "tabular_regression"])
def test_doctor_reports_no_problem_in_a_clean_table(tmp_path, preset):
    target = "label" if preset == "tabular_classification" else "spend"
    _clean_table(400, seed=0).to_csv(tmp_path / "table.csv", index=False)
    _clean_table(120, seed=1).to_csv(tmp_path / "test.csv", index=False)
    drop = "label" if target == "spend" else "spend"
    report = _table(
        tmp_path,
        f"datamodule.target={target}",
        f"datamodule.test_path={tmp_path}/test.csv",
        f"datamodule.drop_columns=[{drop}]",
        preset=preset,
    )
    _clean(report)
    assert report.facts["columns"]["income"] == {
        "type": "numeric",
        "role": "feature",
        "missing_share": 0.0,
        "distinct": 400,
    }
    assert report.facts["drift"]["datamodule.test_path"]  # measured, below the thresholds


def test_diagnose_datamodule_on_a_set_up_datamodule_finds_the_same(tmp_path):
    """What the runner calls at the start of training, on the datamodule it set up."""
    from tasks.engine.runner import build_datamodule

    _planted_table(tmp_path)
    cfg = compose(
        "tabular_classification",
        [f"datamodule.path={tmp_path}/table.csv", "datamodule.target=label"],
    )
    datamodule = build_datamodule(cfg)
    with pytest.warns(UserWarning):
        datamodule.setup("fit")
    report = diagnose_datamodule(datamodule, cfg)
    assert report.to_dict()["findings"] == diagnose(cfg).to_dict()["findings"]


def test_a_setup_error_is_an_error_finding_and_the_raw_checks_still_run(tmp_path):
    _planted_table(tmp_path)
    report = _table(tmp_path, "datamodule.target=nope")
    (error,) = report.of("error")
    assert error.kind == "setup_failed" and "'nope'" in error.what
    assert not report.can_train and report.exit_code() == 2


# -- images ------------------------------------------------------------------------------------
def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def test_doctor_finds_the_problems_planted_in_an_image_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    write_image_folder(root / "train", per_class=8, size=12)
    rng = np.random.default_rng(5)
    for name, colour in (("cat", (200, 40, 40)), ("dog", (40, 200, 40)), ("owl", (40, 40, 200))):
        for i in range(3):
            _png(root / "test" / name / f"t{i}.png", rng.integers(0, 40, (12, 12, 3)) + colour)
    original = np.asarray(Image.open(root / "train" / "cat" / "3.png").convert("RGB"))
    _png(root / "test" / "cat" / "copy.png", original.astype(int) + 2)  # a near copy
    big = rng.integers(0, 40, (16, 16, 3)) + (40, 200, 40)
    _png(root / "train" / "dog" / "big.png", big)  # another size
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really an image")
    cfg = compose("image_folder", [f"datamodule.path={root}", "datamodule.resize=[12,12]"])
    report = diagnose(cfg)
    assert report.can_train and not report.facts.get("checks_not_run")
    (corrupt,) = _found(report, "corrupt_image", "broken.png")
    assert corrupt.severity == "warning" and corrupt.option == "datamodule.on_corrupt"
    (sizes,) = _found(report, "image_size", "12x12", "16x16")
    assert sizes.severity == "info"
    (copies,) = _found(report, "near_duplicate_images", "test/cat/copy.png ~ train/cat/3.png")
    assert copies.what.startswith("1 of 10 test images nearly repeat a")
    assert report.facts["image_files"]["unreadable"] == 1
    # without resize, the sizes stop training: an error that names the option
    report = diagnose(compose("image_folder", [f"datamodule.path={root}"]))
    assert {f.kind for f in report.of("error")} == {"setup_failed", "image_size"}
    assert _found(report, "image_size")[0].option.startswith("datamodule.resize")


def test_doctor_reports_no_problem_in_a_clean_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=10, size=12)
    report = diagnose(compose("image_folder", [f"datamodule.path={root}"]))
    _clean(report)
    modes = [("RGB", "L", "RGBA")[i % 3] for i in range(10)] * 3  # as write_image_folder
    assert report.facts["image_files"]["modes"] == dict(Counter(modes))
    classes = report.facts["classes"]
    assert sorted(classes) == ["cat", "dog", "owl"]
    for split, size in report.facts["sizes"].items():
        assert sum(counts[split] for counts in classes.values()) == size


# -- texts --------------------------------------------------------------------------------------
def test_doctor_finds_the_problems_planted_in_texts(tmp_path):
    texts = make_texts(240)
    texts.loc[[5, 17, 90], "text"] = ["", "   ", ""]
    texts.to_csv(tmp_path / "texts.csv", index=False)
    test = make_texts(40, seed=1)
    test.loc[0] = texts.loc[30]  # a training text, again in the test file
    test.to_csv(tmp_path / "test.csv", index=False)
    cfg = compose(
        "sentiment_gru",
        [f"datamodule.path={tmp_path}/texts.csv", f"datamodule.test_path={tmp_path}/test.csv"],
    )
    report = diagnose(cfg)
    assert report.can_train and not report.facts.get("checks_not_run")
    (empty,) = _found(report, "empty_text", "3 of 240", "5, 17, 90")
    assert empty.option == "datamodule.empty"
    (repeated,) = _found(report, "cross_split_duplicates", "1 of 40 test texts")
    assert repr(texts.text[30][:30]).rstrip("'") in repeated.what
    sizes = report.facts["sizes"]  # the empty texts were dropped (datamodule.empty=drop)
    assert sizes["train"] + sizes["val"] == 240 - 3 and sizes["test"] == 40
    assert report.facts["vocabulary"]["unknown_token_share"] == 0.0


def test_a_vocabulary_too_small_for_the_test_texts_is_a_warning(tmp_path, monkeypatch):
    import datamodules.text as text_module

    make_texts(240).to_csv(tmp_path / "texts.csv", index=False)
    overrides = [f"datamodule.path={tmp_path}/texts.csv", "datamodule.vocab_size=6"]
    # the share comes from the tokenizer a chunk of texts at a time, as the datamodule's ids
    monkeypatch.setattr(text_module, "ENCODE_CHARS", 200)
    calls: list[list[str]] = []
    runs = text_module.token_runs

    def counted(tokenizer, texts, dtype):
        calls.append(list(texts))
        yield from runs(tokenizer, texts, dtype)

    monkeypatch.setattr(text_module, "token_runs", counted)
    cfg = compose("sentiment_gru", overrides)
    report = diagnose(cfg)
    (coverage,) = _found(report, "vocab_coverage", "(6 tokens, the cap)")
    assert coverage.option == "datamodule.vocab_size"
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    ids = [i for text in datamodule.texts["test"] for i in datamodule.tokenizer.encode(text).ids]
    share = report.facts["vocabulary"]["unknown_token_share"]
    assert share == round(ids.count(1) / len(ids), 4) and share > 0.5
    # the test texts were tokenised by the doctor's setup, by its coverage check and by the
    # setup above: the check too went through the chunks
    assert calls.count(datamodule.texts["test"]) == 3


def test_doctor_reports_no_problem_in_clean_texts(tmp_path):
    make_texts(240).to_csv(tmp_path / "texts.csv", index=False)
    report = diagnose(compose("sentiment_gru", [f"datamodule.path={tmp_path}/texts.csv"]))
    _clean(report)
    assert report.facts["lengths"]["train"]["words"]["max"] <= 13


# -- series -------------------------------------------------------------------------------------
def _series(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Hourly readings: a daily cycle, AR(1) noise and a skewed, positive second channel."""
    rng = np.random.default_rng(seed)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.6 * noise[i - 1] + rng.normal(0, 0.3)
    hours = np.arange(n)
    return pd.DataFrame(
        {
            "time": pd.date_range("2024-03-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M"),
            "value": 10 + 2 * np.sin(2 * np.pi * hours / 24) + noise,
            "flow": np.exp(0.5 * np.sin(2 * np.pi * hours / 24) + noise),
        }
    )


def _series_report(tmp_path: Path, frame: pd.DataFrame) -> Report:
    frame.to_csv(tmp_path / "series.csv", index=False)
    overrides = [
        "datamodule._name_=series",
        f"datamodule.path={tmp_path}/series.csv",
        "datamodule.time_column=time",
    ]
    return diagnose(compose("series_autoencoder", overrides))


def test_doctor_finds_the_gap_and_constant_stretch_planted_in_a_series(tmp_path):
    frame = _series()
    frame.loc[1200:1239, "value"] = frame.loc[1200, "value"]  # a sensor stuck for 40 hours
    frame = frame.drop(index=range(500, 506)).reset_index(drop=True)  # 6 hours missing
    report = _series_report(tmp_path, frame)
    assert report.can_train and not report.facts.get("checks_not_run")
    (gap,) = _found(report, "gaps", "1 gap(s)", "about 6 missing step(s)")
    assert gap.severity == "warning" and "2024-03-21 19:00" in gap.what
    (stretch,) = _found(report, "constant_stretch", "'value'", "40 steps")
    assert not _found(report, "constant_stretch", "'flow'")
    assert report.facts["frequency"] == "01:00:00"  # irregular: no pandas frequency


def test_a_duplicated_timestamp_is_an_error_finding(tmp_path):
    frame = _series()
    frame.loc[300, "time"] = frame.loc[299, "time"]
    report = _series_report(tmp_path, frame)
    assert {f.kind for f in report.of("error")} == {"setup_failed", "series_duplicates"}
    assert _found(report, "series_duplicates", "2024-03-13 11:00", "rows 300")
    assert report.exit_code() == 2


def test_doctor_reports_no_problem_in_a_clean_series(tmp_path):
    _clean(_series_report(tmp_path, _series()))


def test_forecast_gaps_stop_training_unless_filled(tmp_path):
    path = write_demand_csv(tmp_path / "demand.csv")
    base = ["datamodule.path=" + str(path), "datamodule.target=demand"]
    _clean(diagnose(compose("forecast_csv", base)))
    frame = pd.read_csv(path).drop(index=range(100, 103))
    frame.to_csv(path, index=False)
    report = diagnose(compose("forecast_csv", base))
    (gap,) = _found(report, "gaps", "about 3 missing step(s)")
    assert gap.severity == "error" and gap.option == "datamodule.missing"
    report = diagnose(compose("forecast_csv", [*base, "datamodule.missing=interpolate"]))
    assert report.can_train and _found(report, "gaps")[0].severity == "info"


# -- sequences, and checks that fail --------------------------------------------------------------
def test_doctor_finds_sequences_repeated_across_splits(tmp_path):
    path = write_ucr_csv(tmp_path / "sequences.csv", n=80)
    frame = pd.read_csv(path)
    pd.concat([frame, frame.iloc[:20]]).to_csv(path, index=False)
    report = diagnose(compose("sequence_classification", [f"datamodule.path={path}"]))
    assert _found(report, "cross_split_duplicates", "repeat a training sequence")
    _clean(diagnose(compose("sequence_classification", [f"datamodule.path={write_ucr_csv(path)}"])))


def test_a_failing_check_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    """The runner calls the doctor before training: a bug in one check must not stop it."""
    import tasks.doctor

    def broken(*args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(tasks.doctor, "_class_leak", broken)
    _planted_table(tmp_path)
    report = _table(tmp_path, "datamodule.target=label")
    assert report.facts["checks_not_run"] == {"leaks": "ZeroDivisionError: a bug"}
    assert not _found(report, "leak") and _found(report, "constant", "'const'")


# -- report files and the command line ----------------------------------------------------------
def test_write_gives_strict_json_and_markdown(tmp_path):
    report = Report(facts={"shift": float("nan"), "count": np.int64(3)})
    report.add("warning", "drift", "column 'x' | differs", "datamodule.x")
    folder = write(report, tmp_path / "out")

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    data = json.loads((folder / "doctor.json").read_text(), parse_constant=no_constants)
    assert data == {
        "findings": [
            {
                "severity": "warning",
                "what": "column 'x' | differs",
                "option": "datamodule.x",
                "kind": "drift",
            }
        ],
        "facts": {"shift": None, "count": 3},
    }
    markdown = (folder / "doctor.md").read_text()
    assert "**warning** (`drift`): column 'x' | differs. Option: `datamodule.x`." in markdown


def test_cli_exit_codes_and_files(tmp_path, capsys):
    _planted_table(tmp_path)
    args = ["+task=tabular_classification", f"datamodule.path={tmp_path}/table.csv"]
    out = tmp_path / "doctor"
    assert main([*args, "datamodule.target=label", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "warning: " in printed and f"report: {out / 'doctor.md'}" in printed
    data = json.loads((out / "doctor.json").read_text())
    assert "leak" in {f["kind"] for f in data["findings"]}
    assert data["facts"]["columns"]["label"]["role"] == "target"
    assert main([*args, "datamodule.target=label", "--strict", f"--out={out}"]) == 1
    assert main([*args, "datamodule.target=nope", "--out", str(tmp_path / "bad")]) == 2
    bad = json.loads((tmp_path / "bad" / "doctor.json").read_text())
    assert [f["kind"] for f in bad["findings"] if f["severity"] == "error"] == ["setup_failed"]
    assert "doctor" in (tmp_path / "bad" / "doctor.md").read_text().lower()


def test_cli_default_folder_and_clean_exit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _clean_table(300, seed=0).to_csv(tmp_path / "table.csv", index=False)
    args = ["task=tabular_classification", "datamodule.path=table.csv", "datamodule.target=label"]
    assert main([*args, "--strict"]) == 0
    (folder,) = (tmp_path / "outputs" / "tabular_classification").glob("doctor_*")
    assert (folder / "doctor.md").is_file() and (folder / "doctor.json").is_file()
    assert "data doctor: " in capsys.readouterr().out


def test_cli_refuses_a_missing_preset_and_unknown_options(capsys):
    assert main(["datamodule.path=x.csv"]) == 2
    assert "+task=NAME" in capsys.readouterr().err
    assert main(["+task=tabular_classification", "--bogus"]) == 2
    assert main(["+task=no_such_preset"]) == 2
    assert "no_such_preset" in capsys.readouterr().err


def test_near_duplicates_keep_one_pair_per_image_however_many_match(tmp_path):
    """Blank images all match each other: 40 blank test images against 3,000 blank
    training images are 40 findings (each with its first match), not 120,000 pairs; the
    hashes and thumbnails are the same from a tensor and from the disk cache."""
    import torch

    from datamodules._disk_rows import CacheWriter, read_cache
    from tasks.doctor import average_hash, near_duplicates

    rng = np.random.default_rng(0)
    train = np.full((3000, 3, 16, 16), 200, np.uint8)
    train[1500:] = rng.integers(0, 255, (1500, 3, 16, 16), dtype=np.uint8)  # not blank
    test = np.full((40, 3, 16, 16), 200, np.uint8)
    with CacheWriter(tmp_path / "c" / "k") as writer:
        writer.append("train", train)
        writer.commit()
    on_disk = read_cache(tmp_path / "c" / "k")["rows"]["train"]
    hashed = average_hash(torch.from_numpy(train))
    for mine, theirs in zip(hashed, average_hash(on_disk)):
        np.testing.assert_array_equal(mine, theirs)
    pairs = near_duplicates(average_hash(torch.from_numpy(test)), hashed)
    assert pairs == [(i, 0) for i in range(40)]
