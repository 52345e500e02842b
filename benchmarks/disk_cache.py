"""Image folders larger than memory: the on-disk cache against the in-memory path.

A folder of generated PNGs (``--images`` of ``--size`` x ``--size`` RGB, ``--classes``
class folders; made once and kept in ``--folder``) is trained with the ``image_folder``
preset three times, each in a fresh process so that its peak memory is its own:

1. ``datamodule.cache=memory``: every image decoded into RAM (the path before the cache);
2. ``datamodule.cache=disk`` with no cache yet: decoded once into a file, read back a
   batch at a time;
3. ``datamodule.cache=disk`` again: the cache is reused.

Printed per run: the seconds spent loading the images (decoding, or opening the cache),
training rows per second (median epoch after the first; ``--rows-per-epoch`` random rows an
epoch, drawn from the whole folder), the ratio to the in-memory path, the process' peak
resident memory up to the end of training (and over the whole run, with testing, plots
and the ONNX export), and how many image files were opened before training (decoding, and
the data check's scan of the files) and during it.

    python benchmarks/disk_cache.py                       # 100k 64x64 images
    python benchmarks/disk_cache.py --images 5000 --rows-per-epoch 2000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cache_bench as bench  # noqa: E402


# -- the folder --------------------------------------------------------------------------
def _write_images(args: tuple[Path, int, int, int, int]) -> None:
    from PIL import Image

    folder, start, stop, size, classes = args
    for i in range(start, stop):
        label = i % classes
        rng = np.random.default_rng(i)
        hue = np.array([(label * 53) % 256, (label * 97) % 256, (label * 151) % 256])
        pixels = rng.integers(0, 90, (size, size, 3)) + hue * 0.6
        row = (label * size) // classes  # a class-specific bright band as well as a tint
        pixels[row : row + max(2, size // 16)] += 80
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        image.save(folder / f"class_{label:02d}" / f"{i:06d}.png", compress_level=1)


def make_folder(folder: Path, images: int, size: int, classes: int) -> Path:
    """The generated folder, made again only when its recorded settings differ."""
    from multiprocessing import Pool

    settings = {"images": images, "size": size, "classes": classes}
    marker = folder / ".settings.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for label in range(classes):
        (folder / f"class_{label:02d}").mkdir(parents=True)
    step = 2000
    jobs = [(folder, s, min(s + step, images), size, classes) for s in range(0, images, step)]
    start = time.perf_counter()
    with Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_images, jobs)
    marker.write_text(json.dumps(settings))
    megabytes = sum(p.stat().st_size for p in folder.rglob("*.png")) / 2**20
    print(f"made {images} PNGs ({megabytes:.0f} MB) in {time.perf_counter() - start:.0f} s")
    return folder


# -- one run, in its own process ------------------------------------------------------------
def child(args: argparse.Namespace) -> dict[str, Any]:
    """Train once with ``args.child`` as the cache mode; what was measured, as a dict."""
    from PIL import Image

    from datamodules.image import ImageFolderDataModule

    opened = {"before": 0, "during": 0}
    phase = {"now": "before"}
    real_open = Image.open

    def counting_open(source: Any, *a: Any, **k: Any) -> Any:
        if isinstance(source, (str, Path)):
            opened[phase["now"]] += 1
        return real_open(source, *a, **k)

    Image.open = counting_open
    loading: list[float] = []

    def loaded(self: Any) -> bool:  # a second call returns the splits already loaded
        return getattr(self, "_splits", None) is not None

    bench.time_calls(ImageFolderDataModule, "load_splits", loading, skip=loaded)
    clock = bench.TrainingClock(on_train_start=lambda: phase.update(now="during"))
    overrides = [
        f"datamodule.path={args.folder}",
        f"+datamodule.cache={args.child}",
        f"datamodule.data_dir={args.cache_root}",
        f"datamodule.batch_size={args.batch}",
        f"+datamodule.train_rows_per_epoch={args.rows_per_epoch}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.limit_val_batches=10",
        "trainer.limit_test_batches=10",
        "trainer.enable_progress_bar=false",
        f"output_dir={args.out}/{args.child}-{os.getpid()}",
    ]
    summary = bench.train("image_folder", overrides, clock)
    return {
        "mode": args.child,
        "load_s": sum(loading),
        "epoch_s": clock.epochs,
        "rows_per_s": clock.per_second(args.rows_per_epoch),
        "training_rss_mb": clock.training_rss_mb,
        "peak_rss_mb": bench.peak_rss_mb(),
        "opened_before": opened["before"],
        "opened_during": opened["during"],
        "test_acc": summary["metrics"].get("test/acc"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lightning-tasks-bench/images"))
    parser.add_argument("--rows-per-epoch", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    bench.add_child_arguments(parser)
    args = parser.parse_args()
    if args.child:
        bench.print_result(child(args))
        return
    folder = make_folder(args.folder, args.images, args.size, args.classes)
    arguments = ["--folder", str(folder), *bench.flags(args, ("rows_per_epoch", "epochs", "batch"))]
    results = bench.run_modes(__file__, args.folder.parent / "runs", arguments)
    print(
        f"\n{args.images} PNGs of {args.size}x{args.size} RGB, {args.classes} classes; "
        f"{args.rows_per_epoch} random rows an epoch, batch {args.batch}, {args.epochs} epochs; "
        f"{os.cpu_count()} cores"
    )
    columns = [
        "loading s",
        "rows/s",
        "vs memory",
        "peak RSS MB to the end of training (whole run)",
        "files opened before / during training",
        "test acc",
    ]
    bench.print_table(
        results,
        "rows_per_s",
        columns,
        lambda r, ratio: [
            f"{r['load_s']:.1f}",
            f"{r['rows_per_s']:.0f}",
            f"{ratio:.2f}",
            f"{r['training_rss_mb']:.0f} ({r['peak_rss_mb']:.0f})",
            f"{r['opened_before']} / {r['opened_during']}",
            f"{r['test_acc']:.3f}",
        ],
    )


if __name__ == "__main__":
    main()
