"""Peak memory of setting up a text table: tokenised a chunk at a time against all at once.

``tokenizers`` returns one Encoding object per text, about 150 bytes a token (ids, type ids,
token strings, offsets, masks); the padded ids the datamodule keeps take 1-4 bytes a token.
Encoding a whole table in one call (what ``TextDataModule`` did before 2026-12-01) needs
the Encodings of every text at once: for a few million reviews, more memory than the
machine has. Chunks of ``datamodules.text.ENCODE_CHARS`` characters bound it.

The script writes a table of ``--docs`` documents (each ``--tweets-per-doc`` tweets of the
shared sentiment file joined, so documents are review-length; sentences of generated words
where the checkout has no shared data folder), then sets up
``TextDataModule`` on it twice, each in a fresh process so that its peak memory is its own:
``whole`` (one chunk as large as the table: the behaviour before) and ``chunked`` (the
default). Printed: the growth of the peak resident memory during ``setup("fit")`` (over the
peak of reading the table once before it), its
seconds, and a checksum of the training ids (the two must hold the same tensors).

    python benchmarks/text_table_memory.py --docs 40000 --tweets-per-doc 10
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cache_bench as bench  # noqa: E402

TWEETS = bench.ROOT.parent / "shared" / "data" / "tweets_sentiment.csv"


def child(mode: str, path: str) -> None:
    import torch

    import datamodules.text as text

    if mode == "whole":
        text.ENCODE_CHARS = text.COUNT_CHUNK = 1 << 62
    datamodule = text.TextDataModule(path=path, seed=0)
    datamodule._sources()  # read once first: the peak below is what setting up adds to reading
    before = bench.peak_rss_mb()
    started = time.perf_counter()
    datamodule.setup("fit")
    seconds = time.perf_counter() - started
    ids, lengths, _ = datamodule.train_data
    result = {
        "mode": mode,
        "seconds": seconds,
        "peak_growth_mb": bench.peak_rss_mb() - before,
        "ids_mb": ids.numel() * ids.element_size() / 2**20,
        "tokens": int(lengths.sum()),
        "checksum": int((ids.long() * torch.arange(1, ids.shape[1] + 1)).sum()),
    }
    bench.print_result(result)


def write_table(folder: Path, docs: int, per_doc: int) -> Path:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    if TWEETS.is_file():
        tweets = pd.read_csv(TWEETS)
    else:  # a checkout without the shared data folder: sentences of generated words
        print(f"{TWEETS} not found: documents of generated sentences")
        words = np.array([f"w{i}" for i in range(5000)])
        tweets = pd.DataFrame(
            {
                "text": [" ".join(rng.choice(words, 15)) for _ in range(5000)],
                "label": ["negative", "positive"] * 2500,
            }
        )
    text_column = "text" if "text" in tweets else tweets.columns[0]
    label_column = "label" if "label" in tweets else tweets.columns[-1]
    labels = tweets[label_column].unique()
    by_label = {
        label: tweets[tweets[label_column] == label][text_column].astype(str).to_numpy()
        for label in labels
    }
    rows = []
    for i in range(docs):
        label = labels[i % len(labels)]
        pool = by_label[label]
        rows.append((" ".join(pool[rng.integers(0, len(pool), per_doc)]), label))
    path = folder / "documents.csv"
    # every field quoted: pandas leaves a carriage return (some tweets hold one) unquoted
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=40000)
    parser.add_argument("--tweets-per-doc", type=int, default=10)
    parser.add_argument("--child", choices=("whole", "chunked"), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path)
        return
    with tempfile.TemporaryDirectory() as work:
        path = write_table(Path(work), args.docs, args.tweets_per_doc)
        results = {
            mode: bench.run_child(__file__, mode, ["--path", str(path)])
            for mode in ("whole", "chunked")
        }
    whole, chunked = results["whole"], results["chunked"]
    print(
        f"{args.docs:,} documents, {chunked['tokens']:,} training tokens, "
        f"padded training ids {chunked['ids_mb']:.0f} MB"
    )
    print("| tokenised | setup s | peak memory growth MB |")
    print("|---|---|---|")
    for name, r in (("whole table at once (before)", whole), ("chunks (now)", chunked)):
        print(f"| {name} | {r['seconds']:.2f} | {r['peak_growth_mb']:.0f} |")
    memory = chunked["peak_growth_mb"] / whole["peak_growth_mb"] if whole["peak_growth_mb"] else 1
    print(
        f"memory chunked/whole {memory:.2f}, "
        f"time chunked/whole {chunked['seconds'] / whole['seconds']:.2f}, "
        f"same training ids: {whole['checksum'] == chunked['checksum']}"
    )


if __name__ == "__main__":
    main()
