"""A text larger than memory: the character model's disk cache against the in-memory path.

A generated UTF-8 text of ``--mb`` megabytes (sentences of a few thousand pseudo-words
drawn with a Zipf-like frequency, some punctuation, a few non-ASCII characters; made once
and kept in ``--folder``) is trained with the ``text_char_lm`` preset three times, each in
a fresh process so that its peak memory is its own:

1. ``datamodule.cache=memory``: the whole file read, decoded and encoded in RAM (about
   three times its size at the peak);
2. ``datamodule.cache=disk`` with no cache yet: encoded once, a chunk at a time, into a
   file that each batch reads its windows from;
3. ``datamodule.cache=disk`` again: the cache is reused and the text is not read at all.

Printed per run: the seconds spent setting up the data (``setup_fit``: reading and
encoding the text, or opening the cache), training windows per second (median epoch after
the first, up to its last training batch; ``--rows-per-epoch`` random windows an epoch),
the ratio to the in-memory path, the process' peak resident memory up to the end of
training (and over the whole run, with testing, samples and exports), how many times the
text file was read (``read_text`` + ``text_chunks`` calls), the test perplexity and the
bigram baseline's.

    python benchmarks/text_cache.py                        # a 300 MB text
    python benchmarks/text_cache.py --mb 20 --epochs 2     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cache_bench as bench  # noqa: E402

#: Bumped whenever the generated text changes for the same settings.
TEXT_FORMAT = 1


# -- the text ----------------------------------------------------------------------------------
def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    """``size`` distinct pseudo-words, shortest first (the most frequent are the shortest)."""
    onsets = ["", "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w"]
    onsets += ["br", "st", "tr", "sch", "pl", "gr", "z"]
    vowels = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ei", "au", "é", "ö"]
    codas = ["", "", "", "n", "r", "s", "l", "m", "t", "nd", "ck", "ß"]
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = rng.choice([1, 2, 3, 4], p=[0.3, 0.4, 0.2, 0.1])
        parts = [
            onsets[rng.integers(len(onsets))]
            + vowels[rng.integers(len(vowels))]
            + codas[rng.integers(len(codas))]
            for _ in range(syllables)
        ]
        words.setdefault("".join(parts))
    return sorted(words, key=len)


#: Between words: (text, weight, ends a sentence).
SEPARATORS = [
    (" ", 0.855, False),
    (", ", 0.06, False),
    (" — ", 0.01, False),
    ("; ", 0.005, False),
    (". ", 0.04, True),
    ("? ", 0.005, True),
    (".\n", 0.02, True),
    ("!\n", 0.005, True),
]


def make_text(folder: Path, mb: float, words: int = 4000, seed: int = 0) -> Path:
    """The generated text file, made again only when its recorded settings differ.

    Words and separators are drawn as numpy ids a chunk of a million words at a time and
    turned into UTF-8 bytes by one gather from a table of every token's bytes; a word after
    a sentence's end is capitalised. The file is cut at the last newline within ``mb``."""
    settings = {"mb": mb, "words": words, "seed": seed, "format": TEXT_FORMAT}
    file, marker = folder / "text.txt", folder / "text.json"
    if file.is_file() and marker.is_file() and json.loads(marker.read_text()) == settings:
        return file
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng, words)
    tokens = vocab + [w.capitalize() for w in vocab] + [s for s, _, _ in SEPARATORS]
    encoded = [t.encode("utf-8") for t in tokens]
    table = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    zipf = 1.0 / (np.arange(words) + 2.7) ** 1.05
    zipf /= zipf.sum()
    weights = np.array([w for _, w, _ in SEPARATORS])
    weights /= weights.sum()
    ends = np.array([e for _, _, e in SEPARATORS])
    target, written, capital = int(mb * 2**20), 0, True
    with open(file, "wb") as handle:
        while written < target:
            n = 1_000_000
            word = rng.choice(words, size=n, p=zipf)
            sep = rng.choice(len(SEPARATORS), size=n, p=weights)
            starts = np.empty(n, dtype=bool)
            starts[0], starts[1:] = capital, ends[sep[:-1]]
            capital = bool(ends[sep[-1]])
            ids = np.empty(2 * n, dtype=np.int64)
            ids[0::2] = word + words * starts
            ids[1::2] = 2 * words + sep
            size = lengths[ids]
            first = np.cumsum(size) - size  # where each token starts in the chunk
            data = table[np.repeat(offsets[ids] - first, size) + np.arange(size.sum())]
            if written + len(data) >= target:
                data = data[: target - written]
                newlines = np.flatnonzero(data == ord("\n"))
                data = data[: newlines[-1] + 1] if len(newlines) else data
                target = written + len(data)  # the last chunk
            handle.write(data.tobytes())
            written += len(data)
    marker.write_text(json.dumps(settings))
    print(f"made a {written / 2**20:.0f} MB text in {time.perf_counter() - start:.1f} s")
    return file


# -- one run, in its own process ------------------------------------------------------------
def child(args: argparse.Namespace) -> dict[str, Any]:
    """Train once with ``args.child`` as the cache mode; what was measured, as a dict."""
    import lightning as L
    import torch

    import datamodules.chars as chars

    reads = {"read_text": 0, "text_chunks": 0}

    def counted(name: str) -> Any:
        real = getattr(chars, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            reads[name] += 1
            return real(*a, **k)

        return wrapper

    # CharTextDataModule looks both up in the module's globals when it calls them
    for name in reads:
        setattr(chars, name, counted(name))
    loading: list[float] = []
    bench.time_calls(chars.CharTextDataModule, "setup_fit", loading)
    clock = bench.TrainingClock(batches_only=True)  # training batches only, not validation
    overrides = [
        f"datamodule.path={args.file}",
        f"datamodule.cache={args.child}",
        f"datamodule.data_dir={args.cache_root}",
        f"datamodule.train_rows_per_epoch={args.rows_per_epoch}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.max_time=null",
        "trainer.limit_val_batches=5",
        "trainer.limit_test_batches=5",
        "trainer.enable_progress_bar=false",
        "task.progress_samples=0",
        f"output_dir={args.out}/{args.child}-{os.getpid()}",
    ]
    summary = bench.train("text_char_lm", overrides, clock)
    scores = {**summary.get("baseline", {}), **summary["metrics"]}
    bigram = scores.get("baseline/bigram_perplexity")
    return {
        "mode": args.child,
        "load_s": sum(loading),
        "setup_calls": len(loading),
        "epoch_s": clock.epochs,
        "windows_per_s": clock.per_second(args.rows_per_epoch),
        "training_rss_mb": clock.training_rss_mb,
        "peak_rss_mb": bench.peak_rss_mb(),
        "read_text_calls": reads["read_text"],
        "text_chunks_calls": reads["text_chunks"],
        "test_perplexity": summary["metrics"].get("test/perplexity"),
        "bigram_perplexity": bigram,
        "baseline": {k: v for k, v in scores.items() if k.startswith("baseline/")},
        "torch": torch.__version__,
        "lightning": L.__version__,
    }


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cells(r: dict[str, Any], ratio: float) -> list[str]:
    """One run's row after its name."""
    reads = r["read_text_calls"] + r["text_chunks_calls"]
    return [
        f"{r['load_s']:.2f}",
        f"{r['windows_per_s']:.0f}",
        f"{ratio:.2f}",
        f"{r['training_rss_mb']:.0f}",
        f"{r['peak_rss_mb']:.0f}",
        f"{reads} ({r['read_text_calls']} + {r['text_chunks_calls']})",
        _number(r["test_perplexity"], 3),
        _number(r["bigram_perplexity"], 3),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=300)
    parser.add_argument(
        "--folder", type=Path, default=Path("~/.cache/lightning-tasks/text_cache_bench")
    )
    parser.add_argument("--rows-per-epoch", type=int, default=3200)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    bench.add_child_arguments(parser)
    args = parser.parse_args()
    if args.child:
        bench.print_result(child(args))
        return
    folder = args.folder.expanduser().resolve()
    file = make_text(folder, args.mb)
    arguments = ["--file", str(file), *bench.flags(args, ("rows_per_epoch", "epochs"))]
    results = bench.run_modes(__file__, folder / "runs", arguments)
    columns = [
        "load s",
        "windows/s",
        "vs memory",
        "peak RSS MB, end of training",
        "peak RSS MB, whole run",
        "text reads (read_text + text_chunks)",
        "test perplexity",
        "bigram perplexity",
    ]
    bench.print_table(results, "windows_per_s", columns, _cells)
    megabytes = file.stat().st_size / 2**20
    print(
        f"\na {megabytes:.1f} MB text ({file}); {args.rows_per_epoch} random 128-character "
        f"windows an epoch, {args.epochs} epochs; {os.cpu_count()} cores; "
        f"torch {results[0]['torch']}, lightning {results[0]['lightning']}"
    )
    if args.json:
        settings = {k: getattr(args, k) for k in ("mb", "rows_per_epoch", "epochs")}
        report = {"file": str(file), "file_mb": megabytes, "cpu_count": os.cpu_count()}
        args.json.write_text(json.dumps({**report, **settings, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
