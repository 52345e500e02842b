"""Image datasets with an official source: MNIST, Fashion-MNIST and CIFAR-10 (downloaded
once with checksums, or read from local copies) and scikit-learn's digits (offline). Each
decodes to the in-memory ``uint8`` tensors of :class:`~datamodules.image.ImageDataModule`."""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datamodules._download import fetch, md5sum
from datamodules.image import ImageDataModule
from tasks.errors import DataError


# -- IDX files (MNIST, Fashion-MNIST) --------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array; checks the header against the size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(
            f"{path}: cannot be read ({exc}); delete it so it is fetched again"
        ) from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file ({len(data)} bytes, header says {expected}); "
            "delete it so it is fetched again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


class MNISTDataModule(ImageDataModule):
    """MNIST handwritten digits: 60,000 training and 10,000 test images, grey 28x28.

    Files (``train-images-idx3-ubyte.gz`` and the three others) are looked for in
    ``<data_dir>/mnist`` and downloaded there when missing (MD5 verified).
    """

    MIRRORS = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    FILES = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    #: Other folders holding the same files (e.g. installed by a system package).
    SEARCH: tuple[str, ...] = ()
    CLASS_NAMES: tuple[str, ...] = ()

    @property
    def dataset_name(self) -> str:
        return "mnist"

    def default_class_names(self, num_classes: int) -> list[str]:
        return list(self.CLASS_NAMES) or super().default_class_names(num_classes)

    def _path(self, filename: str) -> Path:
        return fetch(
            filename,
            self.folder,
            self.mirrors,
            self.FILES[filename],
            search=[Path(p) for p in self.SEARCH],
            download=self.hparams.download,
            what=type(self).__name__,
        )

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        if getattr(self, "_splits", None) is None:
            out = {}
            for split, prefix in (("train", "train"), ("test", "t10k")):
                images = read_idx(self._path(f"{prefix}-images-idx3-ubyte.gz"))
                labels = read_idx(self._path(f"{prefix}-labels-idx1-ubyte.gz"))
                if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                    raise DataError(
                        f"{type(self).__name__}: {prefix} files disagree: images "
                        f"{images.shape}, labels {labels.shape}"
                    )
                out[split] = (
                    torch.from_numpy(images.copy()).unsqueeze(1),
                    torch.from_numpy(labels.astype(np.int64)),
                )
            self._splits = out
        return self._splits


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: 60,000 + 10,000 grey 28x28 clothing images in 10 classes.

    Also found, without copying, where Debian's ``dataset-fashion-mnist`` package
    installs it (``/usr/share/datasets/fashion-mnist``).
    """

    MIRRORS = (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    )
    FILES = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    SEARCH = ("/usr/share/datasets/fashion-mnist",)
    CLASS_NAMES = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )

    @property
    def dataset_name(self) -> str:
        return "fashion_mnist"


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: 50,000 training and 10,000 test colour 32x32 images in 10 classes.

    Reads ``cifar-10-python.tar.gz`` from ``<data_dir>/cifar10`` (downloaded there when
    missing). The archive holds pickles, so its MD5 is checked before every read, not
    only after a download.
    """

    MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
    ARCHIVE = "cifar-10-python.tar.gz"
    MD5 = "c58f30108f718f92721af3b95e74349a"
    CLASS_NAMES = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )

    @property
    def dataset_name(self) -> str:
        return "cifar10"

    def default_class_names(self, num_classes: int) -> list[str]:
        return list(self.CLASS_NAMES)

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        if getattr(self, "_splits", None) is not None:
            return self._splits
        archive = fetch(
            self.ARCHIVE,
            self.folder,
            self.mirrors,
            self.MD5,
            download=self.hparams.download,
            what=type(self).__name__,
        )
        if md5sum(archive) != self.MD5:
            raise DataError(
                f"{archive}: MD5 differs from the official CIFAR-10 archive; delete it so it "
                "is fetched again (it holds pickles, so only the official file is read)"
            )
        batches: dict[str, dict] = {}
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name.startswith(("data_batch_", "test_batch")):
                    batches[name] = pickle.load(tar.extractfile(member), encoding="bytes")  # noqa: S301
        parts = {
            "train": sorted(n for n in batches if n.startswith("data_batch_")),
            "test": ["test_batch"],
        }
        out = {}
        for split, names in parts.items():
            if not names or any(n not in batches for n in names):
                raise DataError(f"{archive}: missing {split} batches; delete it and fetch again")
            data = np.concatenate([batches[n][b"data"] for n in names])
            labels = np.concatenate([np.asarray(batches[n][b"labels"]) for n in names])
            out[split] = (
                torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.uint8)),
                torch.from_numpy(labels.astype(np.int64)),
            )
        self._splits = out
        return out


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 1,797 grey 8x8 handwritten digits (always offline).

    There is no official test set: ``test_fraction`` and ``val_fraction`` of the images
    are held out, stratified by class and seeded.
    """

    @property
    def dataset_name(self) -> str:
        return "digits"

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        return {
            "train": (
                torch.from_numpy(images).unsqueeze(1),
                torch.from_numpy(digits.target.astype(np.int64)),
            )
        }
