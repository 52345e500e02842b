"""Image classification data held in memory as ``uint8`` tensors.

Every datamodule here decodes its images once into a ``(N, C, H, W)`` uint8 tensor and
serves batches as index slices (no per-image PIL work, no workers): MNIST-size data
fits in a few tens of MB, and conversion to float, normalisation and augmentation
happen batch-wise on the training device inside the task.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from datamodules import _disk_rows
from datamodules._disk_rows import take
from datamodules.base import BaseDataModule, CVRows, class_predictions
from tasks.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageWarning(UserWarning):
    """Images were skipped (unreadable or corrupt)."""


class ImageDataModule(BaseDataModule):
    """Shared logic of the in-memory image datamodules.

    A subclass implements :meth:`load_splits`, returning uint8 images and labels for
    ``train`` (and ``test`` where the dataset defines one). Validation rows come from
    the training set (stratified by class, seeded); without a test set, test rows too.
    The per-channel mean and standard deviation of the training split, the class names
    and the image shape are the state saved with checkpoints.

    Args:
        download: Fetch missing files from the dataset's mirrors (checksums verified).
        mirrors: Base URLs to download from instead of the dataset's own.
        predict_path: An image file or a folder of images to predict.
        **kwargs: Loader and split settings of :class:`~datamodules.base.BaseDataModule`.
    """

    #: Where the files can be downloaded from, tried in order.
    MIRRORS: tuple[str, ...] = ()

    def __init__(
        self,
        download: bool = True,
        mirrors: Sequence[str] | None = None,
        predict_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.predict_names: list[str] = []

    # -- what subclasses provide ---------------------------------------------------------
    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"train": (images, labels), "test": ...}``: uint8 ``(N, C, H, W)``, int64 labels."""
        raise NotImplementedError

    def default_class_names(self, num_classes: int) -> list[str]:
        return [str(i) for i in range(num_classes)]

    @property
    def mirrors(self) -> Sequence[str]:
        return list(self.hparams.mirrors or self.MIRRORS)

    @property
    def folder(self) -> Path:
        """Where this dataset's files live: ``<data_dir>/<name>``."""
        return Path(self.hparams.data_dir) / self.dataset_name

    @property
    def dataset_name(self) -> str:
        return type(self).__name__.removesuffix("DataModule").lower()

    # -- state ---------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        self._require_fitted()
        return list(self.fitted_state["class_names"])

    def _require_fitted(self) -> None:
        if not self.fitted_state:
            raise DataError(
                f"{type(self).__name__} has no statistics yet: call setup('fit') or restore "
                "it from a checkpoint (ckpt_path=...) first"
            )

    def data_facts(self) -> dict[str, Any]:
        self._require_fitted()
        s = self.fitted_state
        return {
            "num_classes": len(s["class_names"]),
            "in_channels": s["channels"],
            "image_size": list(s["image_size"]),
            "class_counts": list(s["class_counts"]),
            "mean": list(s["mean"]),
            "std": list(s["std"]),
        }

    # -- setup ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.load_splits()  # downloads once, on one process

    def cv_rows(self, groups: str | None = None) -> CVRows:
        """The training images (an official validation or test set takes no part)."""
        x, y = self.load_splits()["train"]
        _check_images(x, y, f"{type(self).__name__} training set")
        return self._cv_labels(y.numpy(), len(y), groups)

    def setup_fit(self) -> None:
        hp = self.hparams
        splits = self.load_splits()
        x, y = splits["train"]
        _check_images(x, y, f"{type(self).__name__} training set")
        # a cross-validation fold splits the training images only (see cv_rows)
        cv = self.fold is not None
        has_val, has_test = "val" in splits and not cv, "test" in splits and not cv
        train_idx, val_idx, test_idx = self.split_rows(
            len(y),
            0.0 if has_val else hp.val_fraction,
            0.0 if has_test else hp.test_fraction,
            hp.seed,
            stratify=y.numpy(),
        )
        val_x, val_y = splits["val"] if has_val else (take(x, val_idx), y[val_idx])
        if len(val_y) == 0:
            raise ConfigError("datamodule.val_fraction leaves no validation images; raise it")
        train_x, train_y = take(x, train_idx), y[train_idx]
        if not self.fitted_state:
            num_classes = int(y.max()) + 1
            names = splits.get("class_names") or self.default_class_names(num_classes)
            self.fitted_state = {
                "class_names": list(names),
                "channels": int(x.shape[1]),
                "image_size": [int(x.shape[2]), int(x.shape[3])],
                "class_counts": torch.bincount(train_y, minlength=len(names)).tolist(),
                **_channel_stats(train_x),
            }
        self.train_data = (train_x, train_y)
        self.val_data = (val_x, val_y)
        if has_test:
            test_x, test_y = splits["test"]
            _check_images(test_x, test_y, f"{type(self).__name__} test set")
            self.test_data = (test_x, test_y)
        elif len(test_idx):
            self.test_data = (take(x, test_idx), y[test_idx])

    def setup_predict(self) -> None:
        hp = self.hparams
        if hp.predict_path is None:
            raise ConfigError("predicting needs datamodule.predict_path=IMAGE_OR_FOLDER")
        self._require_fitted()
        path = Path(hp.predict_path)
        files = [path] if path.is_file() else _image_files(path, "datamodule.predict_path")
        if not files:
            raise DataError(f"datamodule.predict_path={path}: no image files found")
        channels, size = self.fitted_state["channels"], tuple(self.fitted_state["image_size"])
        images, kept, bad = _decode(files, channels, size)
        _report_unreadable(bad, "datamodule.predict_path", skip=True)
        if not kept:
            raise DataError(f"datamodule.predict_path={path}: none of the images could be read")
        self.predict_names = [str(p) for p in kept]
        self.predict_data = (images,)

    # -- bundles ---------------------------------------------------------------------------
    input_kind = "image"

    def input_signature(self) -> dict[str, Any]:
        s = self.fitted_state
        return {
            "kind": self.input_kind,
            "channels": s["channels"],
            "image_size": list(s["image_size"]),
            "accepts": "base64 PNG/JPEG strings (JSON); also file paths, bytes, uint8 arrays "
            "(H, W[, C]) and PIL images (Python): converted and resized as in training",
            "classes": list(s["class_names"]),
        }

    def example_inputs(self, n: int) -> list[Any]:
        """Test images as base64 PNG strings (lossless: they decode to the same pixels)."""
        if self.test_data is None:
            raise DataError(f"{type(self).__name__} has no test images to take examples from")
        return [png_base64(image) for image in self.test_data[0][:n]]

    def predict_inputs(self, inputs: Sequence[Any]) -> None:
        """Images as base64 strings, file paths, bytes, uint8 arrays or PIL images."""
        self._require_fitted()
        if isinstance(inputs, (str, bytes, np.ndarray)) or not isinstance(inputs, Sequence):
            inputs = [inputs]
        if not len(inputs):
            raise DataError("expected a non-empty list of images")
        s = self.fitted_state
        images, kept, bad = _decode(list(inputs), s["channels"], tuple(s["image_size"]))
        if bad:
            where = next(i for i, x in enumerate(inputs) if x is bad[0][0])
            raise DataError(f"image {where} could not be read: {bad[0][1]}")
        self.predict_names = [x if isinstance(x, str) and len(x) < 256 else "" for x in kept]
        self.predict_names = [p if Path(p).suffix else "" for p in self.predict_names]
        self.predict_data = (images,)

    def predictions_frame(self, outputs: dict[str, Tensor]) -> pd.DataFrame:
        frame = class_predictions(outputs, self.class_names, self.class_names)
        if any(self.predict_names) and len(self.predict_names) == len(frame):
            frame.insert(0, "file", self.predict_names)
        return frame


def _check_images(x: Tensor | _disk_rows.DiskRows, y: Tensor, where: str) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise DataError(
            f"{where}: expected uint8 images (N, C, H, W), got {x.dtype} {tuple(x.shape)}"
        )
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{where}: no images")


def _channel_stats(x: Tensor | _disk_rows.DiskRows) -> dict[str, list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in chunks of a few MB
    (never a float copy of the data)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    # about 4 MB of float64 a chunk
    rows = max(1, 2**19 // max(1, int(np.prod(x.shape[1:]))))
    for chunk in x.split(rows):
        c = chunk.to(torch.float64).div_(255)
        total += c.sum(dim=(0, 2, 3))
        squares += c.pow(2).sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (squares / n - mean.pow(2)).clamp(min=1e-12).sqrt()
    return {"mean": mean.tolist(), "std": torch.where(std > 1e-6, std, 1.0).tolist()}


# -- folders of image files ------------------------------------------------------------------
def _image_files(folder: Path, option: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{option}={folder}: no such folder")
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _to_mode(image: Any, channels: int) -> Any:
    """Grey, RGB, RGBA, palette and 16-bit images to one mode; transparency over white."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        image = Image.fromarray(np.rint(array * (255.0 / peak)).astype(np.uint8))
    return image.convert("L" if channels == 1 else "RGB")


def _open_image(source: Any) -> Any:
    """A PIL image from a file path, encoded bytes, a base64 string of them, a
    ``(H, W)``/``(H, W, C)`` uint8 array, or a PIL image (copied: the caller closes it)."""
    import base64
    import io

    from PIL import Image

    if isinstance(source, Image.Image):
        return source.copy()
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ValueError(
                f"expected a uint8 (H, W) or (H, W, C) array, got {source.dtype} {source.shape}"
            )
        return Image.fromarray(
            source[:, :, 0] if source.ndim == 3 and source.shape[2] == 1 else source
        )
    if isinstance(source, str) and Path(source).suffix.lower() not in IMAGE_SUFFIXES:
        try:
            source = base64.b64decode(source.split(",", 1)[-1], validate=True)
        except ValueError:
            raise ValueError("not an image file name nor base64-encoded image bytes") from None
    if isinstance(source, (bytes, bytearray)):
        return Image.open(io.BytesIO(source))
    if not isinstance(source, (str, Path)):
        raise ValueError(
            f"got a {type(source).__name__}; expected a base64 string, a file path, bytes, a "
            "uint8 array or a PIL image"
        )
    return Image.open(source)


def png_base64(image: Tensor) -> str:
    """A ``(C, H, W)`` uint8 image as a base64 PNG string (lossless)."""
    import base64
    import io

    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode(
    files: Sequence[Any], channels: int, size: tuple[int, int], out: np.ndarray | None = None
) -> tuple[Tensor, list[Any], list[tuple[Any, str]]]:
    """Decode, convert and resize (files, or any source :func:`_open_image` takes);
    unreadable ones are returned, not raised. ``out``: a uint8 array of at least
    ``len(files)`` rows of ``(C, H, W)`` to fill instead of a new tensor (a reused chunk);
    the kept images are then its first rows, and the returned tensor is empty."""
    from PIL import Image

    target = out if out is not None else np.empty((len(files), channels, *size), np.uint8)
    kept: list[Any] = []
    bad: list[tuple[Any, str]] = []
    for path in files:
        try:
            with _open_image(path) as image:
                image.load()
                image = _to_mode(image, channels)
                if image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except Exception as exc:  # PIL raises many types for broken files
            bad.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        array = array[:, :, None] if array.ndim == 2 else array
        target[len(kept)] = array.transpose(2, 0, 1)
        kept.append(path)
    images = torch.from_numpy(target[: len(kept)]) if out is None else torch.empty(0)
    return images, kept, bad


def _report_unreadable(bad: list[tuple[Path, str]], where: str, skip: bool) -> None:
    if not bad:
        return
    listing = "; ".join(f"{p} ({why})" for p, why in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    if not skip:
        raise DataError(
            f"{where}: {len(bad)} unreadable image(s): {listing}{more}. Remove them, or set "
            "datamodule.on_corrupt=skip"
        )
    warnings.warn(
        f"{where}: skipped {len(bad)} unreadable image(s): {listing}{more}",
        ImageWarning,
        stacklevel=3,
    )


class ImageFolderDataModule(ImageDataModule):
    """Your own images: one sub-folder per class.

    Either ``path/train/<class>/...`` with ``path/val/<class>`` and/or
    ``path/test/<class>`` (missing splits are cut from train by seed), or
    ``path/<class>/...`` split by seed into train, validation and test. Images are
    decoded once, converted to one colour mode and resized to ``resize``, and held as
    uint8 (``N * C * H * W`` bytes): in memory, or, when that is more than the memory
    budget, in a cache file under ``data_dir/cache/images`` that batches are read from
    a batch at a time (:mod:`datamodules._disk_rows`). Batches are the same either way.
    The cache is reused by later runs until a file is added, removed or changed.

    Args:
        path: The root folder.
        resize: ``[height, width]`` (or one int) to resize every image to; default: the
            size of the images when they all agree, else an error asking for it.
        channels: 1 (grey), 3 (RGB), or ``auto``: RGB if any training image has colour.
        on_corrupt: ``skip`` unreadable files with a warning listing them, or ``error``.
        cache: ``memory`` (decode on every run, hold in RAM), ``disk`` (decode once into a
            cache file, read a batch at a time), or ``auto``: ``disk`` when the decoded
            images exceed ``memory_budget_mb``.
        memory_budget_mb: The decoded size above which ``auto`` goes to disk; default a
            quarter of the memory available when the data is loaded.
        **kwargs: Download, predict and loader settings of :class:`ImageDataModule`.
    """

    def __init__(
        self,
        path: str | None = None,
        resize: int | Sequence[int] | None = None,
        channels: int | str = "auto",
        on_corrupt: str = "skip",
        cache: str = "auto",
        memory_budget_mb: float | None = None,
        **kwargs: Any,
    ) -> None:
        if not path:
            raise ConfigError(
                "datamodule.path is required: the folder with one sub-folder per class"
            )
        if channels not in ("auto", 1, 3):
            raise ConfigError(f"datamodule.channels={channels!r}; expected auto, 1 or 3")
        if on_corrupt not in ("skip", "error"):
            raise ConfigError(f"datamodule.on_corrupt={on_corrupt!r}; expected skip or error")
        if cache not in _disk_rows.CACHE_MODES:
            raise ConfigError(
                f"datamodule.cache={cache!r}; expected one of {', '.join(_disk_rows.CACHE_MODES)}"
            )
        super().__init__(**kwargs)
        #: Where the decoded images of the last :meth:`load_splits` live (None: in memory).
        self.cache_folder: Path | None = None

    @property
    def dataset_name(self) -> str:
        return Path(self.hparams.path).name

    def _classes(self, root: Path) -> dict[str, list[Path]]:
        if not root.is_dir():
            raise DataError(f"datamodule.path={root}: no such folder")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(
                f"datamodule.path={root}: no class sub-folders; put each class's images in "
                f"{root}/<class name>/"
            )
        classes = {f.name: _image_files(f, "datamodule.path") for f in folders}
        empty = [name for name, files in classes.items() if not files]
        if empty:
            raise DataError(
                f"datamodule.path={root}: class folder(s) {empty} hold no images "
                f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder(s)"
            )
        return classes

    def _size(self, files: list[Path]) -> tuple[int, int]:
        from PIL import Image

        size = self.hparams.resize
        if size is not None:
            size = [size, size] if isinstance(size, int) else list(size)
            if len(size) != 2 or min(size) < 1:
                raise ConfigError(f"datamodule.resize={size}; expected [height, width]")
            return int(size[0]), int(size[1])
        seen = set()
        for path in files[:200]:
            try:
                with Image.open(path) as image:
                    seen.add((image.height, image.width))
            except Exception:  # reported by _decode
                continue
        if len(seen) != 1:
            raise ConfigError(
                f"datamodule.path: images have different sizes ({sorted(seen)[:4]}...); set "
                "datamodule.resize=[height,width] (e.g. 64) to resize them all"
            )
        return seen.pop()

    def _channels(self, files: list[Path]) -> int:
        """3 when any image has colour (a pixel whose R, G and B differ), else 1."""
        from PIL import Image

        if self.hparams.channels != "auto":
            return int(self.hparams.channels)
        for path in files:
            try:
                with Image.open(path) as image:
                    if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                        continue
                    rgb = np.asarray(_to_mode(image, 3), dtype=np.int16)
            except Exception:  # reported by _decode
                continue
            if (rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any():
                return 3
        return 1

    def load_splits(self) -> dict[str, Any]:
        if getattr(self, "_splits", None) is not None:
            return self._splits
        hp = self.hparams
        root = Path(hp.path)
        layout = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
        trees = (
            {s: self._classes(p) for s, p in layout.items()}
            if "train" in layout
            else {"train": self._classes(root)}
        )
        names = list(trees["train"])
        for split, classes in trees.items():
            unknown = sorted(set(classes) - set(names))
            if unknown:
                raise DataError(f"{root}/{split}: classes {unknown} are not in {root}/train")
        listed = {
            split: (
                [p for name in names for p in classes.get(name, [])],
                [i for i, name in enumerate(names) for _ in classes.get(name, [])],
            )
            for split, classes in trees.items()
        }
        every = [p for files, _ in listed.values() for p in files]
        where = {split: f"{root}/{split}" if layout else str(root) for split in listed}
        cache = None
        if hp.cache != "memory":  # a complete cache of exactly these files is always used
            settings = {"channels": hp.channels, "resize": hp.resize, "splits": list(listed)}
            source = _disk_rows.source_folder(Path(hp.data_dir) / "cache", "images", root)
            cache = source / _disk_rows.content_key(every, settings)
        meta = _disk_rows.read_cache(cache) if cache is not None else None
        if meta is not None and self.fitted_state:
            fitted = [self.fitted_state["channels"], list(self.fitted_state["image_size"])]
            meta = meta if [meta["channels"], meta["size"]] == fitted else None
        if meta is None:
            if self.fitted_state:
                channels = self.fitted_state["channels"]
                size = tuple(self.fitted_state["image_size"])
            else:
                channels, size = self._channels(every), self._size(every)
            nbytes = len(every) * channels * size[0] * size[1]
            to_disk = _disk_rows.use_disk(hp.cache, nbytes, hp.memory_budget_mb)
            if not to_disk:
                self.cache_folder = None
                out: dict[str, Any] = {}
                for split, (files, labels) in listed.items():
                    images, kept, bad = _decode(files, channels, size)
                    self._report(bad, where[split])
                    out[split] = (images, _kept_labels(files, labels, kept))
                self._splits = {"class_names": names, **out}
                return self._splits
            meta = self._write_cache(cache, listed, channels, size, where)
        else:  # the same warning (or error) as when the cache was written
            for split, lines in meta["skipped"].items():
                self._report([(Path(p), why) for p, why in lines], where[split])
        self.cache_folder = cache
        rows = meta["rows"]
        self._splits = {
            "class_names": names,
            **{split: (rows[f"{split}.u8"], rows[f"{split}.labels"][:]) for split in listed},
        }
        return self._splits

    def _report(self, bad: list[tuple[Path, str]], where: str) -> None:
        _report_unreadable(bad, where, skip=self.hparams.on_corrupt == "skip")

    def _write_cache(
        self,
        folder: Path,
        listed: dict[str, tuple[list[Path], list[int]]],
        channels: int,
        size: tuple[int, int],
        where: dict[str, str],
    ) -> dict[str, Any]:
        """Decode each split's images into a new cache folder (one file per split), a chunk
        of images at a time: memory holds one chunk, not the data."""
        most = max(len(files) for files, _ in listed.values())
        chunk = np.empty((max(1, min(1024, most)), channels, *size), np.uint8)
        with _disk_rows.CacheWriter(folder) as writer:
            skipped: dict[str, list[list[str]]] = {}
            for split, (files, labels) in listed.items():
                kept: list[Any] = []
                bad: list[tuple[Any, str]] = []
                writer.append(f"{split}.u8", chunk[:0])  # the file exists even when empty
                for start in range(0, len(files), len(chunk)):
                    part = files[start : start + len(chunk)]
                    _, kept_part, bad_part = _decode(part, channels, size, out=chunk)
                    writer.append(f"{split}.u8", chunk[: len(kept_part)])
                    kept += kept_part
                    bad += bad_part
                self._report(bad, where[split])
                writer.append(f"{split}.labels", _kept_labels(files, labels, kept).numpy())
                skipped[split] = [[str(p), why] for p, why in bad]
            writer.commit(skipped=skipped, channels=channels, size=list(size))
        meta = _disk_rows.read_cache(folder)
        if meta is None:
            raise DataError(f"{folder}: the image cache just written cannot be read back")
        return meta


def _kept_labels(files: list[Path], labels: list[int], kept: list[Any]) -> Tensor:
    position = {p: i for i, p in enumerate(files)}
    return torch.tensor([labels[position[p]] for p in kept], dtype=torch.int64)


# the bundled and downloaded datasets' old import path (datamodules.image:MNISTDataModule),
# resolved on first use: datamodules.image_datasets imports this module
_MOVED = (
    "CIFAR10DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "MNISTDataModule",
    "read_idx",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from datamodules import image_datasets

        return getattr(image_datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
