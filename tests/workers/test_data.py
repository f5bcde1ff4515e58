"""Data loading: sources, decoding, the on-disk cache, stratified splits, error messages."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workers import data as data_mod
from workers.data import (
    DataUnavailableError,
    DecodedDataset,
    load_dataset,
    split_dataset,
    stratified_take,
)

CLASSES = ["cat", "ant", "bee"]  # deliberately unsorted: indices must follow sorted names


def _image(value: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder_files(per_class: dict[str, int]) -> dict[str, np.ndarray]:
    files = {}
    for split, count in per_class.items():
        for c, cls in enumerate(CLASSES):
            for i in range(count):
                files[f"{split}/{cls}/{i:04d}.png"] = _image(1000 * c + 100 * (split == "test") + i)
    return files


def _write_folder(root: Path, files: dict[str, np.ndarray]) -> None:
    for rel, array in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_png(array))


def _write_tarball(path: Path, files: dict[str, np.ndarray], prefix: str = "") -> None:
    with tarfile.open(path, "w:gz") as tar:
        for rel, array in files.items():
            raw = _png(array)
            info = tarfile.TarInfo(prefix + rel)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def _folder_cfg(**extra) -> dict:
    return {"name": "folder", "val_size": 3, "train_subset": None, "split_seed": 0, **extra}


def test_tarball_is_decoded_exactly_and_labelled_by_sorted_class_names(tmp_path: Path) -> None:
    files = _folder_files({"train": 4, "test": 2})
    tar = tmp_path / "tiny.tar.gz"
    _write_tarball(tar, files, prefix="tiny/")
    splits = load_dataset(_folder_cfg(), str(tar), tmp_path / "cache")

    assert splits.classes == sorted(CLASSES)
    assert splits.num_classes == 3
    assert splits.checksum == hashlib.sha256(tar.read_bytes()).hexdigest()
    assert len(splits.train_y) + len(splits.val_y) == 12 and len(splits.val_y) == 3
    assert splits.train_x.dtype == torch.uint8 and splits.train_x.shape[1:] == (3, 32, 32)
    assert splits.test_y.dtype == torch.int64 and len(splits.test_y) == 6
    # Test images come in sorted (class, file) order, so they can be checked one by one.
    for k, (image, label) in enumerate(zip(splits.test_x, splits.test_y, strict=True)):
        cls, i = sorted(CLASSES)[k // 2], k % 2
        expected = files[f"test/{cls}/{i:04d}.png"]
        assert label == sorted(CLASSES).index(cls)
        assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))


def test_second_load_reads_the_cache_without_decoding(tmp_path: Path, monkeypatch) -> None:
    tar = tmp_path / "tiny.tar"
    _write_tarball(tar, _folder_files({"train": 4, "test": 1}))
    first = load_dataset(_folder_cfg(), str(tar), tmp_path / "cache")

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(data_mod, "_decode", no_decode)
    second = load_dataset(_folder_cfg(), str(tar), tmp_path / "cache")
    assert torch.equal(first.train_x, second.train_x) and first.checksum == second.checksum
    assert len(list((tmp_path / "cache").glob("decoded-*.pt"))) == 1


def test_image_folder_directory_and_resizing(tmp_path: Path) -> None:
    files = _folder_files({"train": 3, "test": 1})
    files["train/ant/big.png"] = _image(7, size=48)  # not 32×32: resized on decode
    _write_folder(tmp_path / "imgs", files)
    splits = load_dataset(
        {"name": "folder", "path": str(tmp_path / "imgs"), "val_size": 2}, None, tmp_path / "c"
    )
    assert len(splits.train_y) + len(splits.val_y) == 10
    assert splits.train_x.shape[1:] == (3, 32, 32)


def test_cifar10_name_accepts_an_image_folder_but_checks_the_class_count(tmp_path: Path) -> None:
    tar = tmp_path / "three.tar"
    _write_tarball(tar, _folder_files({"train": 2, "test": 1}))
    with pytest.raises(ValueError, match="10 classes"):
        load_dataset({"name": "cifar10", "val_size": 1}, str(tar), tmp_path / "cache")


def _write_fake_cifar10(root: Path, per_batch: int = 20) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [*[f"data_batch_{i}" for i in range(1, 6)], "test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [i % 10 for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def test_torchvision_cifar_root(tmp_path: Path) -> None:
    _write_fake_cifar10(tmp_path / "root")
    splits = load_dataset(
        {"name": "cifar10", "val_size": 10, "split_seed": 1}, str(tmp_path / "root"), tmp_path / "c"
    )
    assert splits.num_classes == 10 and splits.classes[3] == "c3"
    assert len(splits.train_y) == 90 and len(splits.val_y) == 10 and len(splits.test_y) == 20
    batch = pickle.loads((tmp_path / "root/cifar-10-batches-py/test_batch").read_bytes())
    assert torch.equal(splits.test_x[0].flatten(), torch.from_numpy(batch["data"][0]))


def test_missing_data_says_how_to_point_at_it(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as info:
        load_dataset({"name": "cifar10"}, None, tmp_path, download=False)
    message = str(info.value)
    assert "--data /path/to/cifar-root" in message
    assert "ACTSEARCH_DATA=" in message
    assert "../shared/data/cifar10-jpg.tar.xz" in message


def test_download_failure_becomes_data_unavailable(tmp_path: Path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(data_mod, "_torchvision_class", lambda name: offline)
    with pytest.raises(DataUnavailableError, match=r"download into .* failed"):
        load_dataset({"name": "cifar100"}, None, tmp_path)


def test_nonexistent_data_path(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="does not exist"):
        load_dataset({"name": "cifar10"}, str(tmp_path / "nope"), tmp_path, download=False)
    with pytest.raises(DataUnavailableError, match="neither an image folder"):
        load_dataset({"name": "folder", "path": str(tmp_path)}, None, tmp_path)


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cifar10, cifar100, folder"):
        load_dataset({"name": "mnist"}, None, tmp_path)


def test_stratified_take_is_proportional_seeded_and_disjoint() -> None:
    labels = torch.cat([torch.zeros(600), torch.ones(300), torch.full((100,), 2)]).long()
    taken, rest = stratified_take(labels, 100, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[taken]).tolist() == [60, 30, 10]
    assert len(set(taken.tolist()) | set(rest.tolist())) == 1000
    assert not set(taken.tolist()) & set(rest.tolist())
    again, _ = stratified_take(labels, 100, torch.Generator().manual_seed(0))
    other, _ = stratified_take(labels, 100, torch.Generator().manual_seed(1))
    assert torch.equal(taken, again) and not torch.equal(taken, other)


def _indexed_dataset(n: int = 1000, classes: int = 10) -> DecodedDataset:
    # Pixel (0, 0) channels 0/1 carry each image's index, so splits can be traced back.
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    index = torch.arange(n)
    x[:, 0, 0, 0], x[:, 1, 0, 0] = (index % 256).to(torch.uint8), (index // 256).to(torch.uint8)
    y = index % classes
    return DecodedDataset(x, y, x[:10], y[:10], [str(k) for k in range(classes)], "idx")


def _ids(images: torch.Tensor) -> set[int]:
    return set((images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).tolist())


def test_validation_split_and_train_subset_are_stratified_and_disjoint() -> None:
    splits = split_dataset(_indexed_dataset(), val_size=200, train_subset=300, seed=0)
    assert len(splits.val_y) == 200 and len(splits.train_y) == 300
    assert torch.bincount(splits.val_y).tolist() == [20] * 10
    assert torch.bincount(splits.train_y).tolist() == [30] * 10
    assert not _ids(splits.val_x) & _ids(splits.train_x)
    # Labels still belong to their images.
    ids = splits.train_x[:, 0, 0, 0].long() + 256 * splits.train_x[:, 1, 0, 0].long()
    assert torch.equal(ids % 10, splits.train_y)
    # The validation set does not depend on train_subset.
    full = split_dataset(_indexed_dataset(), val_size=200, train_subset=None, seed=0)
    assert _ids(full.val_x) == _ids(splits.val_x) and len(full.train_y) == 800


def test_split_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="val_size"):
        split_dataset(_indexed_dataset(), val_size=1000, train_subset=None, seed=0)
    with pytest.raises(ValueError, match="train_subset"):
        split_dataset(_indexed_dataset(), val_size=100, train_subset=901, seed=0)


def test_splits_move_to_a_device_once(tiny_splits) -> None:
    assert tiny_splits.to("cpu") is tiny_splits
