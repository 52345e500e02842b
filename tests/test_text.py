"""Text classification and the character language model: data rules, networks, runs."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_corpus, make_texts, run_cli, write_imdb_archive, write_texts_csv

from datamodules.base import split_indices
from datamodules.chars import CharItemsDataModule, CharTextDataModule
from datamodules.text import IMDBDataModule, TextDataModule
from tasks.api import compose, run
from tasks.engine.runner import build_datamodule
from tasks.errors import ConfigError, DataError
from tasks.nets.text import BiGRU, CharTransformer, EmbeddingLSTM, TfidfMLP
from tasks.text import CharLanguageModel, TextClassification, load_word_vectors, novel_share


def texts_module(tmp_path, frame: pd.DataFrame | None = None, **options) -> TextDataModule:
    path = tmp_path / "texts.csv"
    (make_texts() if frame is None else frame).to_csv(path, index=False)
    return TextDataModule(path=str(path), **options)


# -- the text datamodule -------------------------------------------------------------------
def _words(text: str) -> list[str]:
    """The word tokenizer's tokens: lower-cased runs of word characters or of punctuation."""
    return re.findall(r"\w+|[^\w\s]+", text.lower())


def test_vocabulary_and_length_come_from_the_training_split_only(tmp_path):
    frame = make_texts(200)
    # the rows the seeded split holds out for validation, and a separate test file, get a
    # word of their own and forty more tokens: neither may reach the vocabulary or max_length
    _, val_idx, _ = split_indices(len(frame), 0.2, 0.0, seed=0, stratify=frame.label.to_numpy())
    frame.loc[val_idx, "text"] = "zyzzyva " * 40 + frame.loc[val_idx, "text"]
    test = make_texts(40, seed=1)
    test["text"] = "quokka " * 40 + test["text"]
    test.to_csv(tmp_path / "test.csv", index=False)
    dm = texts_module(
        tmp_path, frame, val_fraction=0.2, test_path=str(tmp_path / "test.csv"), seed=0
    )
    dm.setup("fit")
    train = frame.drop(index=val_idx).text
    assert sorted(dm.texts["train"]) == sorted(train)
    vocabulary = {word for text in train for word in _words(text)}
    assert set(dm.tokenizer.get_vocab()) == {"[PAD]", "[UNK]", *vocabulary}
    assert dm.tokenizer.token_to_id("zyzzyva") is None
    assert dm.tokenizer.token_to_id("quokka") is None
    for ids, _, _ in (dm.val_data, dm.test_data):
        assert (ids == 1).any(dim=1).all()  # the held-out word is unknown in every such row
    lengths = [len(_words(t)) for t in train]
    assert dm.fitted_state["max_length"] == math.ceil(np.percentile(lengths, 95)) < 40
    assert dm.tokenizer.token_to_id("[PAD]") == 0 and dm.tokenizer.token_to_id("[UNK]") == 1
    ids, lengths_t, y = dm.train_data
    assert ids.shape == (len(dm.texts["train"]), dm.fitted_state["max_length"])
    assert (ids[torch.arange(len(ids)), lengths_t - 1] > 0).all()  # last real token
    assert dm.class_names == ["negative", "positive"] and dm.data_facts()["num_classes"] == 2
    # each batch is cut to its longest row
    batch = next(iter(dm.val_dataloader()))
    assert batch[0].shape[1] == int(batch[1].max())


def test_token_ids_are_held_in_the_smallest_type_and_batches_are_int64(tmp_path):
    """A vocabulary of a few hundred tokens: the splits hold 2 bytes a token (not 8), the
    same ids as int64 encoding gives, and every batch is widened to int64."""
    dm = texts_module(tmp_path, make_texts(200), seed=0)
    dm.setup("fit")
    assert dm.id_dtype() == (torch.uint8 if dm.tokenizer.get_vocab_size() <= 256 else torch.int16)
    for split in (dm.train_data, dm.val_data, dm.test_data):
        assert split[0].dtype == dm.id_dtype() and split[0].element_size() <= 2
    expected, _ = dm.encode(dm.texts["train"])
    assert expected.dtype == torch.long and torch.equal(dm.train_data[0].long(), expected)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        assert all(batch[0].dtype == torch.long for batch in loader)


@pytest.mark.parametrize("truncate", ["head", "tail"])
def test_texts_are_tokenised_a_chunk_at_a_time_into_the_ids_of_each_text(
    tmp_path, monkeypatch, truncate
):
    """A table is never encoded whole (tokenizers' encodings take ~150 bytes a token): a
    chunk of texts at a time, padded without a loop, with the ids each text has alone."""
    import datamodules.text as text_module

    monkeypatch.setattr(text_module, "ENCODE_CHARS", 300)
    frame = make_texts(120)
    frame.loc[::9, "text"] = frame.loc[::9, "text"] + " and" * 30  # longer than max_length
    frame.loc[7, "text"] = "word " * 100  # longer than a chunk: a chunk of its own
    frame.loc[5, "text"] = "   "  # empty once stripped: one unknown token
    dm = texts_module(tmp_path, frame, seed=0, truncate=truncate, empty="keep")
    dm.setup("fit")
    chunks = list(text_module.text_chunks(dm.texts["train"]))
    assert [text for chunk in chunks for text in chunk] == dm.texts["train"]
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk) == 1 or sum(map(len, chunk)) <= 300
    max_length = dm.fitted_state["max_length"]
    for split in ("train", "val", "test"):
        ids, lengths, _ = getattr(dm, f"{split}_data")
        for row, text in enumerate(dm.texts[split]):
            expected = dm.tokenizer.encode(text).ids or [1]
            expected = expected[:max_length] if truncate == "head" else expected[-max_length:]
            assert lengths[row] == len(expected)
            assert ids[row, : len(expected)].tolist() == expected
            assert not ids[row, len(expected) :].any()
    assert any(len(dm.tokenizer.encode(t).ids) > max_length for t in dm.texts["train"])


def test_max_length_counts_an_empty_text_kept_as_no_tokens(tmp_path):
    """``empty=keep`` gives an empty text one unknown token to read, but its length in the
    percentile is its own, 0 (the percentile below falls between the empty texts and the
    others, where 0 and 1 give different lengths)."""
    frame = make_texts(80)
    frame.loc[::2, "text"] = "   "
    frame["text"] = frame["text"].where(frame.index % 2 == 0, "one two three four")
    first = texts_module(tmp_path, frame, seed=0, empty="keep")
    first.setup("fit")
    train = first.texts["train"]
    empties = sum(not t.strip() for t in train)
    percentile = 100 * (empties - 0.5) / (len(train) - 1)  # half way from the last empty
    dm = texts_module(tmp_path, frame, seed=0, empty="keep", length_percentile=percentile)
    dm.setup("fit")
    assert dm.texts["train"] == train
    own = [len(dm.tokenizer.encode(t).ids) for t in train]
    assert dm.fitted_state["max_length"] == math.ceil(np.percentile(own, percentile)) == 2
    ids, lengths, _ = dm.train_data
    assert all(ids[i, 0] == 1 and lengths[i] == 1 for i, t in enumerate(train) if not t.strip())


def test_document_frequency_counts_each_row_once_and_never_the_padding(monkeypatch):
    import datamodules.text as text_module
    from datamodules.text import _document_frequency

    monkeypatch.setattr(text_module, "COUNT_CHUNK", 64)  # a block of rows at a time
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, size=(200, 12)).astype(np.int16)
    ids[:, 8:] = 0  # padding
    expected = np.zeros(40)
    for row in ids:
        expected[np.unique(row[row > 0])] += 1
    assert np.array_equal(_document_frequency(ids, 40), expected)


def test_bytes_that_are_not_utf8_are_replaced_and_counted(tmp_path):
    path = tmp_path / "latin.csv"
    rows = [("caf\xe9 great love", "positive"), ("awful late", "negative")] * 20
    body = "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)
    path.write_bytes(body.encode("latin-1"))
    dm = TextDataModule(path=str(path), val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert any("\ufffd" in t for t in dm.texts["train"])
    assert any("20 texts had bytes that are not valid utf-8" in w for w in dm.data_warnings)


def test_empty_texts_and_missing_labels_follow_the_rules(tmp_path):
    frame = make_texts(60)
    frame.loc[[3, 7], "text"] = ["", "   "]
    dm = texts_module(tmp_path, frame)
    dm.setup("fit")
    assert sum(len(v) for v in dm.texts.values()) == 58
    assert "dropped 2 empty texts" in " ".join(dm.data_warnings)
    # named as the lines of the file a user opens (the header is line 1)
    with pytest.raises(DataError, match=r"2 texts are empty \(lines 5, 9\)"):
        texts_module(tmp_path, frame, empty="error").setup("fit")
    kept = texts_module(tmp_path, frame, empty="keep")
    kept.setup("fit")
    assert sum(len(v) for v in kept.texts.values()) == 60
    frame.loc[5, "label"] = np.nan
    with pytest.raises(DataError, match=r"1 rows have no label \(line 7\)"):
        texts_module(tmp_path, frame).setup("fit")


def test_misnamed_columns_and_options_name_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"no column 'txt' \(datamodule.text_column\)"):
        texts_module(tmp_path, text_column="txt").setup("fit")
    with pytest.raises(DataError, match="Did you mean 'label'"):
        texts_module(tmp_path, label_column="labels").setup("fit")
    with pytest.raises(ConfigError, match="datamodule.path is required"):
        TextDataModule()
    with pytest.raises(ConfigError, match="tokenizer='chars'"):
        TextDataModule(path="x.csv", tokenizer="chars")


def test_long_texts_are_cut_and_bpe_works(tmp_path):
    frame = make_texts(60)
    frame.loc[0, "text"] = "great " * 5000
    dm = texts_module(tmp_path, frame, tokenizer="bpe", vocab_size=200, max_chars=1000)
    dm.setup("fit")
    assert max(len(t) for split in dm.texts.values() for t in split) <= 1000
    assert "1 texts were cut at max_chars=1000" in " ".join(dm.data_warnings)
    assert dm.tokenizer.get_vocab_size() <= 200


def test_class_folders_fixed_split_and_predicting_a_folder(tmp_path):
    frame = make_texts(80)
    for split, part in (("train", frame.iloc[:60]), ("test", frame.iloc[60:])):
        for i, row in part.iterrows():
            folder = tmp_path / "corpus" / split / row.label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.txt").write_text(row.text, encoding="utf-8")
    dm = TextDataModule(path=str(tmp_path / "corpus"), val_fraction=0.2)
    dm.setup("fit")
    assert len(dm.texts["test"]) == 20 and len(dm.texts["train"]) + len(dm.texts["val"]) == 60
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "b.txt").write_text("love it", encoding="utf-8")
    (inbox / "a.txt").write_text("", encoding="utf-8")
    predictor = TextDataModule(path=str(tmp_path / "corpus"), predict_path=str(inbox))
    predictor.load_state_dict(dm.state_dict())
    predictor.setup("predict")
    frame = predictor.predictions_frame(
        {"pred": torch.tensor([0, 1]), "prob": torch.tensor([[0.9, 0.1], [0.2, 0.8]])}
    )
    assert frame.file.str.endswith(("a.txt", "b.txt")).tolist() == [True, True]
    assert frame.pred.tolist() == ["negative", "positive"] and frame.text.tolist()[1] == "love it"


def test_split_column_fixes_the_split(tmp_path):
    frame = make_texts(90).assign(split=["train"] * 60 + ["val"] * 10 + ["test"] * 20)
    dm = texts_module(tmp_path, frame, split_column="split")
    dm.setup("fit")
    assert [len(dm.texts[s]) for s in ("train", "val", "test")] == [60, 10, 20]
    frame.loc[0, "split"] = "holdout"
    with pytest.raises(DataError, match=r"values \['holdout'\]; use train, val and test"):
        texts_module(tmp_path, frame, split_column="split").setup("fit")


def test_imdb_reads_the_archive_with_its_split_and_says_where_it_goes(tmp_path, monkeypatch):
    write_imdb_archive(tmp_path, monkeypatch, n=48)
    dm = IMDBDataModule(data_dir=str(tmp_path), download=False, val_fraction=0.25)
    dm.setup("fit")
    assert len(dm.texts["test"]) == 12 and dm.class_names == ["neg", "pos"]
    assert sum(len(dm.texts[s]) for s in ("train", "val")) == 36  # unsup/ left out
    assert not any("<br />" in t for t in dm.texts["train"])
    empty = tmp_path / "elsewhere"
    with pytest.raises(DataError, match=r"aclImdb_v1.tar.gz is not on disk.*Put the file in"):
        IMDBDataModule(data_dir=str(empty), download=False).setup("fit")
    monkeypatch.setattr(IMDBDataModule, "MD5", "0" * 32)
    with pytest.raises(DataError, match="MD5 differs from the official archive"):
        IMDBDataModule(data_dir=str(tmp_path), download=False).setup("fit")


# -- text networks -----------------------------------------------------------------------
def test_recurrent_networks_never_read_the_padding():
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    padded = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    for net in (EmbeddingLSTM(20, 3), BiGRU(20, 3, embedding_dim=8, hidden_size=8)):
        net.eval()
        assert torch.allclose(net(ids, lengths), net(padded, lengths), atol=1e-6)
        alone = net(ids[1:, :2], lengths[1:])
        assert torch.allclose(net(ids, lengths)[1:], alone, atol=1e-6)


@pytest.mark.parametrize("net", [EmbeddingLSTM(500, 2, 16, 32), BiGRU(500, 3, 8, 16)])
def test_text_rnns_start_from_keras_initialisation(net):
    """Small embeddings, orthogonal recurrent weights, Glorot input weights, zero biases and
    an LSTM forget gate bias of 1: on 3-class tweets, 3 seeds, this took sentiment_lstm
    from 0.733 to 0.752 accuracy (benchmarks/RESULTS.md)."""
    rnn = net.rnn
    gates = 4 if isinstance(rnn, torch.nn.LSTM) else 3
    embedding = net.embedding.weight
    assert embedding.abs().max() <= 0.05 and not embedding[0].any()
    for name, weight in rnn.named_parameters():
        for k, block in enumerate(weight.detach().chunk(gates, dim=0)):
            if name.startswith("weight_hh"):
                eye = torch.eye(block.shape[0])
                assert torch.allclose(block @ block.T, eye, atol=1e-5), name
            elif name.startswith("weight_ih"):
                fan_in, fan_out = block.shape[1], block.shape[0]
                bound = math.sqrt(6 / (fan_in + fan_out))
                assert block.abs().max() <= bound and block.std() > 0.3 * bound, name
            else:
                forget = gates == 4 and k == 1 and name.startswith("bias_ih")
                assert torch.all(block == (1.0 if forget else 0.0)), (name, k)


def test_bag_of_words_is_l2_normalised_tfidf():
    net = TfidfMLP(6, 2, hidden_sizes=[])
    net.idf.copy_(torch.tensor([1.0, 1.0, 2.0, 1.0, 3.0, 1.0]))
    captured = {}
    net.mlp.register_forward_hook(lambda m, inputs, out: captured.update(x=inputs[0]))
    net(torch.tensor([[2, 2, 4, 0]]), torch.tensor([3]))
    expected = torch.tensor([0, 0, 4.0, 0, 3.0, 0]) / 5.0
    assert torch.allclose(captured["x"][0], expected)


def test_word_vectors_load_from_a_local_file(tmp_path):
    glove = tmp_path / "vectors.txt"
    glove.write_text("3 4\ngreat 1 2 3 4\nunseen 9 9 9 9\nawful -1 -2 -3 -4\n", encoding="utf-8")
    vectors, found = load_word_vectors(glove, {"[PAD]": 0, "great": 1, "awful": 2, "x": 3}, 4)
    assert found.tolist() == [False, True, True, False]
    assert vectors[2].tolist() == [-1, -2, -3, -4]
    with pytest.raises(DataError, match="4 values, but task.embedding_dim=8"):
        load_word_vectors(glove, {"great": 1}, 8)


def test_words_the_vector_file_lacks_start_at_its_spread(tmp_path):
    csv = write_texts_csv(tmp_path / "texts.csv", n=120)
    rng = np.random.default_rng(0)
    words = ["great", "awful", "film", "plot", "boring", "superb"]
    lines = [f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(0, 0.3, 16)) for w in words]
    (tmp_path / "vectors.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    overrides = [
        f"datamodule.path={csv}",
        f"task.embeddings_path={tmp_path / 'vectors.txt'}",
        "task.freeze_embeddings=true",
        "debug=tiny",
        f"output_dir={tmp_path / 'run'}",
    ]
    summary = run(compose("sentiment_lstm", overrides))
    ckpt = torch.load(summary["best_checkpoint"], weights_only=True)
    weight = ckpt["state_dict"]["model.embedding.weight"]
    vocab = json.loads(ckpt["TextDataModule"]["tokenizer"])["model"]["vocab"]
    found = [vocab[w] for w in words if w in vocab]
    lacking = [i for w, i in vocab.items() if w not in words and i > 0]
    assert len(found) >= 2 and len(lacking) > 20
    spread = float(weight[found].std())
    assert 0.7 * spread < float(weight[lacking].std()) < 1.3 * spread  # not +-0.05, not 1


# -- runs --------------------------------------------------------------------------------
def test_sentiment_run_reports_metrics_mistakes_and_predicts_in_order(tmp_path):
    csv = write_texts_csv(
        tmp_path / "texts.csv", n=300, classes=("negative", "neutral", "positive")
    )
    glove = tmp_path / "vectors.txt"
    glove.write_text("great " + " ".join(["0.5"] * 16) + "\n", encoding="utf-8")
    overrides = [
        f"datamodule.path={csv}",
        f"task.embeddings_path={glove}",
        "task.freeze_embeddings=true",
        "trainer.max_epochs=8",
        "datamodule.batch_size=32",
        "task.lr=0.02",
        "trainer.enable_progress_bar=false",
        f"output_dir={tmp_path / 'run'}",
    ]
    summary = run(compose("sentiment_lstm", overrides))
    metrics = summary["metrics"]
    # the cue words make the classes learnable: well above always answering one class
    majority = pd.read_csv(csv).label.value_counts(normalize=True).max()
    assert metrics["test/acc"] > majority + 0.25 and metrics["test/f1"] > majority + 0.25
    assert metrics["test/auroc"] > 0.75
    assert summary["baseline"]["baseline/acc"] == pytest.approx(majority, abs=0.05)
    mistakes = pd.read_csv(tmp_path / "run" / "confident_mistakes.csv")
    assert (mistakes.label != mistakes.predicted).all()
    assert mistakes.confidence.is_monotonic_decreasing
    ckpt = torch.load(summary["best_checkpoint"], weights_only=True)
    weight = ckpt["state_dict"]["model.embedding.weight"]
    vocab = json.loads(ckpt["TextDataModule"]["tokenizer"])["model"]["vocab"]
    assert torch.allclose(weight[vocab["great"]], torch.full((16,), 0.5))  # loaded and frozen
    lacking = [i for word, i in vocab.items() if word != "great" and i > 0]
    assert 0.8 < float(weight[lacking].std()) < 1.2  # one vector found: a unit-normal start
    assert not weight[0].any()  # padding

    new = tmp_path / "new.csv"
    pd.DataFrame({"text": ["love it, best ever", "", "awful and rude"]}).to_csv(new, index=False)
    predict = overrides[:1] + [
        "mode=predict",
        f"ckpt_path={summary['best_checkpoint']}",
        f"datamodule.predict_path={new}",
        f"output_dir={tmp_path / 'predict'}",
    ]
    run(compose("sentiment_lstm", predict))
    out = pd.read_csv(tmp_path / "predict" / "predictions.csv", keep_default_na=False)
    assert out.text.tolist() == ["love it, best ever", "", "awful and rude"]
    probs = out[[c for c in out.columns if c.startswith("prob_")]].sum(axis=1)
    np.testing.assert_allclose(probs, 1.0, rtol=1e-5)


def test_bow_network_gets_the_training_idf(tmp_path):
    csv = write_texts_csv(tmp_path / "texts.csv")
    cfg = compose(
        "sentiment_lstm",
        [f"datamodule.path={csv}", "task.network=bow", "debug=tiny", f"output_dir={tmp_path}"],
    )
    summary = run(cfg)
    ckpt = torch.load(summary["best_checkpoint"], weights_only=True)
    idf = ckpt["state_dict"]["model.idf"]
    assert torch.allclose(idf, torch.tensor(ckpt["TextDataModule"]["idf"], dtype=idf.dtype))
    assert idf.max() > 1.0


# -- character language model ----------------------------------------------------------------
def test_items_become_boundary_framed_inputs_and_targets(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("anna\nbob\n\nEve\nzoé\n" * 3, encoding="utf-8")
    dm = CharItemsDataModule(path=str(path), val_fraction=0.2, test_fraction=0.2, seed=0)
    dm.setup("fit")
    vocab = dm.vocab
    assert vocab[:3] == "\0\n\ufffd" and "E" not in vocab  # lower-cased
    x, y = dm.train_data
    item = dm.training_items[0]
    ids = [vocab.index(c) for c in item]
    assert x[0, : len(ids) + 1].tolist() == [1, *ids]
    assert y[0, : len(ids) + 1].tolist() == [*ids, 1]
    assert (y[0, len(ids) + 1 :] == -100).all() and (x[0, len(ids) + 1 :] == 0).all()
    assert dm.data_facts() == {"vocab": vocab, "block_size": 5, "item_list": True}
    assert dm.ids("q").tolist() == [2]  # a character the training split lacks


def test_bigram_baseline_matches_a_hand_count(tmp_path):
    path = tmp_path / "items.txt"
    path.write_text("ab\nab\nab\nb\nab\nab\nb\nab\n", encoding="utf-8")
    dm = CharItemsDataModule(path=str(path), val_fraction=0.25, test_fraction=0.0, smoothing=0.1)
    dm.setup("fit")
    x_train, y_train = dm.train_data
    v = len(dm.vocab)
    mask = y_train != -100
    pairs = list(zip(x_train[mask].tolist(), y_train[mask].tolist()))
    counts = np.full((v, v), 0.1)
    for a, b in pairs:
        counts[a, b] += 1
    logp = np.log(counts / counts.sum(axis=1, keepdims=True))
    x_val, y_val = dm.val_data
    mask = y_val != -100
    expected = -np.mean([logp[a, b] for a, b in zip(x_val[mask].tolist(), y_val[mask].tolist())])
    assert dm.baselines["val"]["bigram_loss"] == pytest.approx(expected)
    assert dm.baselines["val"]["bigram_loss"] < dm.baselines["val"]["unigram_loss"]


def test_running_text_windows_are_contiguous_views(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(make_corpus(), encoding="utf-8")
    dm = CharTextDataModule(path=str(path), block_size=16, batch_size=8)
    dm.setup("fit")
    n = len(dm.encoded)
    val_start = n - round(0.1 * n) - round(0.1 * n)
    starts = dm.train_data[0]
    assert int(starts.max()) + 16 + 1 <= val_start  # no training target in validation
    x, y = next(iter(dm.train_dataloader()))
    (first,) = next(dm.train_dataloader()._slices())  # the same seeded epoch-0 order
    assert x.shape == (8, 16)
    for i, s in enumerate(first.tolist()):
        assert torch.equal(x[i], dm.encoded[s : s + 16].long())
        assert torch.equal(y[i], dm.encoded[s + 1 : s + 17].long())
    # the text is held in 1 byte a character; batches are int64 ids, as the model takes
    assert dm.encoded.dtype == torch.uint8 and x.dtype == y.dtype == torch.long
    assert np.array_equal(dm.encoded.numpy(), dm.ids(path.read_text(encoding="utf-8")))
    dm.fitted_state = {"vocab": "".join(map(chr, range(32, 32 + 300)))}  # a larger alphabet
    assert dm.id_dtype() == np.int16


def test_transformer_is_causal():
    net = CharTransformer(10, block_size=8, embedding_dim=16, num_heads=2, dropout=0.0).eval()
    a = torch.tensor([[1, 3, 4, 5, 6, 7]])
    b = a.clone()
    b[0, 4:] = 9
    assert torch.allclose(net(a)[:, :4], net(b)[:, :4], atol=1e-5)


def test_sampling_is_seeded_respects_prefix_top_k_and_never_emits_specials():
    vocab = "\0\n\ufffdabc"
    lm = CharLanguageModel(vocab=vocab, block_size=6, hidden_size=16, embedding_dim=8)
    first = lm.generate(12, seed=3, prefix="a")
    assert first == lm.generate(12, seed=3, prefix="a")
    assert all(s.startswith("a") and len(s) <= 1 + 6 for s in first)
    assert not any(c in s for s in first for c in "\0\ufffd\n")
    greedy = lm.generate(4, top_k=1, seed=1)
    assert len(set(greedy)) == 1  # top-1 is deterministic whatever the seed
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        lm.generate(1, temperature=0)
    assert novel_share(["ann", "bob", ""], {"ann"}) == 0.5


def test_names_run_writes_samples_and_generate_mode_samples_again(tmp_path):
    summary = run(compose("names_lstm", ["debug=tiny", f"output_dir={tmp_path / 'train'}"]))
    metrics, baseline = summary["metrics"], summary["baseline"]
    assert {"test/loss", "test/perplexity", "test/acc", "test/novel_share"} <= set(metrics)
    assert metrics["test/perplexity"] == pytest.approx(math.exp(metrics["test/loss"]), rel=1e-3)
    assert {"baseline/bigram_loss", "baseline/unigram_loss"} <= set(baseline)
    assert {"val/loss", "baseline/val_bigram_loss"} <= set(summary["fit_metrics"])
    samples = (tmp_path / "train" / "samples.txt").read_text(encoding="utf-8").splitlines()
    assert len(samples) == 20
    cfg = compose(
        "names_lstm",
        [
            "mode=generate",
            f"ckpt_path={summary['best_checkpoint']}",
            "sample.num_samples=7",
            "sample.prefix=jo",
            f"output_dir={tmp_path / 'gen'}",
        ],
    )
    generated = run(cfg)
    lines = (tmp_path / "gen" / "samples.txt").read_text(encoding="utf-8").splitlines()
    assert lines == generated["samples"] and len(lines) == 7
    assert all(line.startswith("jo") for line in lines)
    datamodule = build_datamodule(compose("names_lstm"))
    datamodule.setup("fit")
    known = set(datamodule.training_items)
    novel = [line not in known for line in lines if line]
    assert generated["novel_share"] == pytest.approx(sum(novel) / len(novel))


def test_generate_mode_needs_a_language_model(tmp_path):
    summary = run(compose("iris_mlp", ["debug=tiny", f"output_dir={tmp_path / 'iris'}"]))
    cfg = compose(
        "iris_mlp",
        ["mode=generate", f"ckpt_path={summary['best_checkpoint']}", f"output_dir={tmp_path}"],
    )
    with pytest.raises(ConfigError, match="does not generate samples"):
        run(cfg)


def test_text_classification_rejects_bow_with_word_vectors():
    with pytest.raises(ConfigError, match="no embedding layer"):
        TextClassification(network="bow", embeddings_path="glove.txt")


def test_running_text_samples_are_separated_in_the_file(tmp_path):
    from tasks.text import SAMPLE_SEPARATOR

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_corpus(), encoding="utf-8")
    overrides = [f"datamodule.path={corpus}", "datamodule.block_size=32", "debug=tiny"]
    summary = run(compose("text_char_lm", [*overrides, f"output_dir={tmp_path / 't'}"]))
    text = (tmp_path / "t" / "samples.txt").read_text(encoding="utf-8")
    assert text.count(SAMPLE_SEPARATOR) == 2  # task.samples=3
    assert {"baseline/bigram_loss", "test/perplexity"} <= {
        *summary["baseline"],
        *summary["metrics"],
    }


def test_a_text_table_torn_by_a_carriage_return_says_how_to_write_it(tmp_path):
    """pandas' to_csv leaves a text holding a bare \\r unquoted (tweets do hold one): the
    row comes apart when read, and the one-line error names the line and the fix."""
    frame = make_texts(60)
    frame.loc[3, "text"] = "first half\rsecond half"
    path = tmp_path / "texts.csv"
    frame.to_csv(path, index=False)
    result = run_cli("+task=sentiment_gru", f"datamodule.path={path}", "debug=tiny", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "rows have no label" in errors[0]
    assert "line 5 holds a carriage return (\\r) that ends no line" in errors[0]
    assert "quoting=csv.QUOTE_ALL" in errors[0]
    frame.to_csv(path, index=False, quoting=csv.QUOTE_ALL)  # the fix it names
    dm = TextDataModule(path=str(path), seed=0)
    dm.setup("fit")
    assert "first half\rsecond half" in [*dm.texts["train"], *dm.texts["val"], *dm.texts["test"]]


def test_bad_text_data_is_named(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.txt").write_text("loose file", encoding="utf-8")
    with pytest.raises(DataError, match=r"has no class folders \(root/<class>/\*.txt\)"):
        TextDataModule(path=str(tmp_path / "flat")).setup("fit")
    (tmp_path / "classes" / "pos").mkdir(parents=True)
    (tmp_path / "classes" / "neg").mkdir()
    (tmp_path / "classes" / "pos" / "1.txt").write_text("great", encoding="utf-8")
    with pytest.raises(DataError, match=r"class folder .*neg' has no .txt files"):
        TextDataModule(path=str(tmp_path / "classes")).setup("fit")
    one_class = make_texts(40).assign(label="positive")
    with pytest.raises(DataError, match=r"the training split has one class only"):
        texts_module(tmp_path, one_class).setup("fit")
    test_csv = tmp_path / "test.csv"
    make_texts(20, classes=("negative", "neutral")).to_csv(test_csv, index=False)
    with pytest.raises(DataError, match=r"labels \['neutral'\] do not occur in the training split"):
        texts_module(tmp_path, test_path=str(test_csv)).setup("fit")


def test_bad_character_data_is_named(tmp_path):
    few = tmp_path / "few.txt"
    few.write_text("ann\n\nbob\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"need at least 3 items \(one per line\), found 2"):
        CharItemsDataModule(path=str(few)).setup("fit")
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"has no text"):
        CharTextDataModule(path=str(blank)).setup("fit")
    short = tmp_path / "short.txt"
    short.write_text("a tiny text", encoding="utf-8")
    with pytest.raises(DataError, match=r"fewer than one window of block_size \+ 1 = 129"):
        CharTextDataModule(path=str(short)).setup("fit")


def test_bad_network_settings_are_named():
    from tasks.nets.text import build_char_net, build_text_net

    with pytest.raises(ConfigError, match=r"'cnn' is not a text network.*\['lstm', 'gru', 'bow'\]"):
        build_text_net("cnn", 10, 2)
    with pytest.raises(ConfigError, match=r"'gpt' is not a language model"):
        build_char_net("gpt", 10, 8)
    with pytest.raises(ConfigError, match=r"embedding_dim=30 must be divisible by num_heads=4"):
        CharTransformer(10, block_size=8, embedding_dim=30, num_heads=4)
    lm = CharLanguageModel(vocab="\0\n\ufffdab", block_size=4, hidden_size=8)
    with pytest.raises(ConfigError, match=r"top_k must be >= 1, got 0"):
        lm.generate(1, top_k=0)


def test_a_budgeted_epoch_is_a_fresh_draw_of_windows(tmp_path):
    """datamodule.train_rows_per_epoch: each epoch is that many training windows, drawn
    anew; validation, checkpoints and early stopping then come every that many windows."""
    path = tmp_path / "corpus.txt"
    path.write_text(make_corpus(), encoding="utf-8")
    dm = CharTextDataModule(path=str(path), block_size=16, batch_size=8, train_rows_per_epoch=40)
    dm.setup("fit")
    assert len(dm.train_data[0]) > 80  # far more windows than one budgeted epoch
    loader = dm.train_dataloader()
    assert len(loader) == 5
    epochs = [torch.cat([b[0] for b in loader._slices()]).tolist() for _ in range(2)]
    assert [len(e) for e in epochs] == [40, 40] and len(set(epochs[0])) == 40
    assert set(epochs[0]) != set(epochs[1])  # a fresh random subset every epoch
    assert set(epochs[0]) | set(epochs[1]) <= set(dm.train_data[0].tolist())
    assert len(dm.val_dataloader()) == -(-len(dm.val_data[0]) // 8)  # validation is whole
    with pytest.raises(ConfigError, match="train_rows_per_epoch must be >= 1"):
        CharTextDataModule(path=str(path), train_rows_per_epoch=0)


def test_progress_samples_show_what_the_model_writes(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_corpus(), encoding="utf-8")
    overrides = [
        f"datamodule.path={corpus}",
        "datamodule.block_size=32",
        "datamodule.train_rows_per_epoch=64",
        "task.progress_samples=40",
        "trainer.max_epochs=2",
        "peers=off",
        f"output_dir={tmp_path / 'run'}",
    ]
    # with the plain-line progress bar of logs and pipes, which prints the task's lines
    summary = run(compose("text_char_lm", overrides))
    assert summary["global_step"] == 2 * 64 // 64  # two budgeted epochs of one batch each
    shown = [line for line in capsys.readouterr().out.splitlines() if "sample at step" in line]
    assert len(shown) == 2  # after each validation, none for the sanity check
    assert shown[0].startswith("sample at step 1 (val loss ")


def test_word_vectors_need_a_datamodule_with_a_tokenizer(tmp_path):
    """task.embeddings_path with a datamodule that has no word tokenizer is one clear
    ConfigError when training starts, not an AttributeError."""
    from types import SimpleNamespace

    vectors = tmp_path / "vectors.txt"
    vectors.write_text("good 0.1 0.2\n", encoding="utf-8")
    task = TextClassification(network="lstm", embedding_dim=2, embeddings_path=str(vectors))
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(), global_step=0)
    with pytest.raises(ConfigError, match="has no tokenizer; drop task.embeddings_path"):
        task.on_fit_start()
