"""Image classification: downloads from a local HTTP server, IDX/CIFAR parsing, image
folders with bad files, batch-wise augmentation, fine-tuning switches, run artefacts."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import warnings

import numpy as np
import pytest
import torch
from conftest import write_cifar_archive, write_idx, write_idx_dataset, write_image_folder

from datamodules.base import split_indices
from datamodules.image import (
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    ImageWarning,
    MNISTDataModule,
    read_idx,
)
from tasks.api import compose, run
from tasks.errors import ConfigError, DataError
from tasks.image import ImageClassification, random_crop, random_hflip


@pytest.fixture
def mirror(tmp_path):
    """An HTTP server on 127.0.0.1 serving generated MNIST-layout files; yields (url, md5s)."""
    served = tmp_path / "served"
    md5 = write_idx_dataset(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", md5
    server.shutdown()
    server.server_close()


def test_mnist_downloads_verifies_and_parses(mirror, tmp_path, monkeypatch):
    url, md5 = mirror
    monkeypatch.setattr(MNISTDataModule, "FILES", md5)
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), mirrors=["http://127.0.0.1:9/", url])
    dm.prepare_data()
    dm.setup("fit")
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(md5)
    x, y = dm.train_data
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
    assert len(x) + len(dm.val_data[0]) == 60 and len(dm.test_data[0]) == 20
    facts = dm.data_facts()
    assert facts["num_classes"] == 10 and facts["in_channels"] == 1
    assert 0 < facts["mean"][0] < 1 and facts["std"][0] > 0


def test_a_download_with_the_wrong_checksum_is_not_kept(mirror, tmp_path, monkeypatch):
    url, md5 = mirror
    monkeypatch.setattr(MNISTDataModule, "FILES", {**md5, "train-images-idx3-ubyte.gz": "0" * 32})
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), mirrors=[url])
    with pytest.raises(DataError, match="checksum mismatch") as info:
        dm.prepare_data()
    assert f"Put the file in {tmp_path / 'data' / 'mnist'}" in str(info.value)
    assert not list((tmp_path / "data" / "mnist").glob("train-images*"))  # no partial file


class FakeResponse:
    """An HTTP response read in two halves; ``between`` runs after the first half."""

    def __init__(self, payload: bytes, between=None, fail: bool = False):
        self.parts = [payload[: len(payload) // 2], payload[len(payload) // 2 :]]
        self.between, self.fail = between, fail

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, size=-1):
        if not self.parts:
            return b""
        part = self.parts.pop(0)
        if len(self.parts) == 0 and self.between is not None:
            self.between()
        if len(self.parts) == 0 and self.fail:
            raise ConnectionResetError("connection reset by peer")
        return part


def test_parallel_downloads_into_one_folder_do_not_collide(tmp_path, monkeypatch):
    from datamodules import _download
    from datamodules._download import fetch

    payload = bytes(range(256)) * 4000
    md5 = hashlib.md5(payload).hexdigest()
    folder = tmp_path / "data"

    def second_job():  # another sweep job fetches the same file while the first is writing
        _download._fetch_one("http://mirror/f.bin", folder / "f.bin", md5)
        finished.append("second job")

    finished: list[str] = []
    responses = iter([FakeResponse(payload, between=second_job), FakeResponse(payload)])
    monkeypatch.setattr(_download, "_open_url", lambda url: next(responses))
    assert fetch("f.bin", folder, ["http://mirror/"], md5) == folder / "f.bin"
    assert finished == ["second job"]  # and the first one returned its path
    assert (folder / "f.bin").read_bytes() == payload
    assert [p.name for p in folder.iterdir()] == ["f.bin"]  # no temporary file left


def test_a_broken_or_wrong_download_leaves_no_file(tmp_path, monkeypatch):
    from datamodules import _download
    from datamodules._download import fetch

    payload = b"x" * 1000
    folder = tmp_path / "data"
    broken = FakeResponse(payload, fail=True)
    monkeypatch.setattr(_download, "_open_url", lambda url: broken)
    with pytest.raises(DataError, match="Download failed: http://mirror/f.bin: connection reset"):
        fetch("f.bin", folder, ["http://mirror/"], None)
    assert list(folder.iterdir()) == []
    monkeypatch.setattr(_download, "_open_url", lambda url: FakeResponse(payload))
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch("f.bin", folder, ["http://mirror/"], "0" * 32)
    assert list(folder.iterdir()) == []


def test_offline_without_files_says_where_they_go(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz is not on disk (datamodule.download=false)" in message
    assert f"Put the file in {tmp_path / 'mnist'}" in message


def test_fashion_mnist_is_read_where_a_system_package_put_it(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_idx_dataset(system)
    monkeypatch.setattr(FashionMNISTDataModule, "SEARCH", (str(system),))
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "data"), download=False)
    dm.setup("fit")
    assert not (tmp_path / "data").exists()  # read in place, not copied
    assert dm.class_names[0] == "T-shirt/top" and dm.class_names[9] == "Ankle boot"


def test_truncated_and_foreign_idx_files_are_named(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((4, 3, 3)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated or corrupt IDX"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(path)


def test_cifar10_archive_is_parsed_and_its_checksum_always_checked(tmp_path, monkeypatch):
    md5 = write_cifar_archive(tmp_path / "cifar10")
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError, match="MD5 differs from the official CIFAR-10 archive"):
        dm.setup("fit")  # pickles are read only from the official file
    monkeypatch.setattr(CIFAR10DataModule, "MD5", md5)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False)
    dm.setup("fit")
    assert dm.train_data[0].shape[1:] == (3, 32, 32) and len(dm.test_data[0]) == 20
    assert dm.class_names[:2] == ["airplane", "automobile"]


def test_digits_are_offline_and_split_three_ways():
    dm = DigitsDataModule(val_fraction=0.15, test_fraction=0.2)
    dm.setup("fit")
    sizes = [len(d[0]) for d in (dm.train_data, dm.val_data, dm.test_data)]
    assert sum(sizes) == 1797 and dm.train_data[0].shape[1:] == (1, 8, 8)
    assert int(dm.train_data[0].max()) == 255


class PlantedImages(ImageDataModule):
    """Dark training images; the rows the seeded split holds out (and a test set when
    ``with_test``) are white, so statistics over anything but the training split show."""

    def __init__(self, with_test: bool = False, **kwargs):
        super().__init__(**kwargs)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 60, size=(90, 3, 6, 6)) + np.array([0, 40, 80])[None, :, None, None]
        y = np.arange(90) % 3
        hp = self.hparams
        test = 0.0 if with_test else hp.test_fraction
        train, val, held_out = split_indices(90, hp.val_fraction, test, hp.seed, stratify=y)
        x[np.concatenate([val, held_out])] = 255
        self.pixels, self.labels, self.train_rows = x, y, train
        self.splits = {"train": (torch.tensor(x, dtype=torch.uint8), torch.tensor(y))}
        if with_test:
            white = torch.full((12, 3, 6, 6), 255, dtype=torch.uint8)
            self.splits["test"] = (white, torch.tensor(y[:12]))

    def load_splits(self):
        return self.splits


@pytest.mark.parametrize("with_test", [False, True])
def test_image_statistics_come_from_the_training_split_only(with_test):
    dm = PlantedImages(with_test=with_test, val_fraction=0.2, test_fraction=0.2, seed=3)
    dm.setup("fit")
    train = dm.pixels[dm.train_rows] / 255.0
    assert len(dm.train_data[0]) == len(train)
    facts = dm.data_facts()
    np.testing.assert_allclose(facts["mean"], train.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(facts["std"], train.std(axis=(0, 2, 3)), rtol=1e-5)
    assert max(facts["mean"]) < 0.6  # white held-out images would pull it towards 1
    assert facts["class_counts"] == np.bincount(dm.labels[dm.train_rows]).tolist()


def test_image_folder_skips_corrupt_files_and_mixes_modes(tmp_path):
    root = write_image_folder(tmp_path / "images")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    dm = ImageFolderDataModule(path=str(root), val_fraction=0.2, test_fraction=0.2)
    with pytest.warns(ImageWarning, match=r"skipped 1 unreadable image\(s\): .*broken.png"):
        dm.setup("fit")
    assert dm.class_names == ["cat", "dog", "owl"]
    assert dm.data_facts()["in_channels"] == 3  # grey, RGB and RGBA files become RGB
    total = sum(len(d[1]) for d in (dm.train_data, dm.val_data, dm.test_data))
    assert total == 24
    strict = ImageFolderDataModule(path=str(root), on_corrupt="error")
    with pytest.raises(DataError, match="1 unreadable image.*broken.png.*on_corrupt=skip"):
        strict.setup("fit")


def test_image_folder_needs_a_path_and_valid_options(tmp_path):
    with pytest.raises(ConfigError, match="datamodule.path is required"):
        ImageFolderDataModule()
    with pytest.raises(ConfigError, match="datamodule.on_corrupt='ignore'; expected skip or error"):
        ImageFolderDataModule(path=str(tmp_path), on_corrupt="ignore")
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderDataModule(path=str(tmp_path)).setup("fit")


def test_image_folder_rejects_an_empty_class_and_mixed_sizes(tmp_path):
    root = write_image_folder(tmp_path / "images")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['empty'\] hold no images"):
        ImageFolderDataModule(path=str(root)).setup("fit")
    (root / "empty").rmdir()
    from PIL import Image

    Image.new("RGB", (20, 16)).save(root / "cat" / "big.png")
    with pytest.raises(ConfigError, match="datamodule.resize"):
        ImageFolderDataModule(path=str(root)).setup("fit")
    dm = ImageFolderDataModule(path=str(root), resize=[10, 10])
    dm.setup("fit")
    assert dm.train_data[0].shape[2:] == (10, 10)


def test_image_folder_uses_train_val_test_folders_and_predicts_a_folder(tmp_path):
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        write_image_folder(tmp_path / "images" / split, per_class=n)
    dm = ImageFolderDataModule(
        path=str(tmp_path / "images"), predict_path=str(tmp_path / "images" / "test" / "owl")
    )
    dm.setup("fit")
    assert [len(d[1]) for d in (dm.train_data, dm.val_data, dm.test_data)] == [18, 9, 9]
    dm.setup("predict")
    assert len(dm.predict_data[0]) == 3
    task = ImageClassification(**dm.data_facts(), backbone="convnet")
    outputs = task.predict_outputs(task(dm.predict_data[0]))
    frame = dm.predictions_frame(outputs)
    assert list(frame.columns[:2]) == ["file", "pred"] and frame["file"][0].endswith("0.png")


def test_grey_mode_when_no_image_has_colour(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.new("RGB", (8, 8), (i * 20, i * 20, i * 20)).save(tmp_path / name / f"{i}.png")
    dm = ImageFolderDataModule(path=str(tmp_path), val_fraction=0.3, test_fraction=0.0)
    dm.setup("fit")
    assert dm.data_facts()["in_channels"] == 1


def test_batch_augmentations_keep_shapes_and_pixels():
    torch.manual_seed(0)
    x = torch.randint(1, 256, (256, 1, 5, 5), dtype=torch.uint8)  # no 0: the padding shows
    assert torch.equal(random_crop(x, 0), x)
    cropped = random_crop(x, 1)
    assert cropped.shape == x.shape and cropped.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    shifts = []
    for i in range(len(x)):  # each image is one 5x5 window of its own padded image
        windows = padded[i, 0].unfold(0, 5, 1).unfold(1, 5, 1).reshape(-1, 5, 5)
        (shift,) = [k for k, w in enumerate(windows) if torch.equal(cropped[i, 0], w)]
        shifts.append(shift)
    # drawn per image: all nine shifts (the unshifted one is number 4) in a batch
    assert np.bincount(shifts, minlength=9).min() >= 10
    flipped = random_hflip(x)
    mirrored = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(m or torch.equal(flipped[i], x[i]) for i, m in enumerate(mirrored))
    assert 0.35 < np.mean(mirrored) < 0.65  # each image with probability 1/2
    task = ImageClassification(in_channels=1, augment={"hflip": True, "crop_padding": 1})
    labels = torch.arange(256)
    images, out_labels = task.augment_batch((x, labels))
    assert out_labels is labels and images.shape == x.shape
    assert sum(not torch.equal(a, b) for a, b in zip(images, x)) > 200  # 1 in 18 unchanged


def test_unknown_settings_are_named():
    with pytest.raises(ConfigError, match="Did you mean 'resnet_small'"):
        ImageClassification(backbone="resnet_smal")
    with pytest.raises(ConfigError, match=r"unknown keys \['flip'\]"):
        ImageClassification(augment={"flip": True})
    with pytest.raises(ConfigError, match="not a torchvision.transforms.v2 class"):
        ImageClassification(augment={"transforms": [{"name": "Spin"}]})
    with pytest.raises(ConfigError, match="unknown torchvision model 'resnet19'"):
        ImageClassification(backbone="torchvision:resnet19")


def test_reference_mnist_network_has_the_reference_size():
    task = ImageClassification(backbone="mnist_cnn", num_classes=10, in_channels=1)
    assert sum(p.numel() for p in task.model.parameters()) == 347_146


def test_torchvision_backbone_loads_local_weights_and_fine_tunes_in_two_phases(tmp_path):
    import torchvision

    reference = torchvision.models.get_model("resnet18", weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    task = ImageClassification(
        backbone="torchvision:resnet18",
        weights_path=str(tmp_path / "resnet18.pth"),
        num_classes=3,
        in_channels=1,
        image_size=[16, 16],
        freeze_backbone=True,
        unfreeze_at_epoch=1,
    )
    assert torch.equal(task.model.model.conv1.weight, reference.conv1.weight)
    assert task.model.head.out_features == 3

    class Trainer:
        current_epoch = 0

    for epoch, backbone_trains in ((0, False), (1, True)):
        task._trainer = Trainer()
        Trainer.current_epoch = epoch
        task.train()
        task.on_train_epoch_start()
        assert task.model.model.conv1.weight.requires_grad is backbone_trains
        assert task.model.head.weight.requires_grad
        assert task.model.model.bn1.training is backbone_trains
    task._trainer = None
    out = task(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    assert out.shape == (2, 3)
    with pytest.raises(DataError, match="not a state_dict of torchvision resnet34"):
        ImageClassification(
            backbone="torchvision:resnet34", weights_path=str(tmp_path / "resnet18.pth")
        )


def test_digits_run_writes_image_artefacts(tmp_path):
    cfg = compose("digits_cnn", ["debug=tiny", f"output_dir={tmp_path}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run(cfg)
    for name in (
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "per_class_accuracy.csv",
        "worst_misclassified.png",
    ):
        assert (tmp_path / name).is_file(), name
    assert {"test/acc", "test/top5_acc", "baseline/acc"} <= set(summary["metrics"]) | set(
        summary.get("baseline", {})
    )
    lines = (tmp_path / "per_class_accuracy.csv").read_text().splitlines()
    assert lines[0] == "class,accuracy,images" and len(lines) == 11
