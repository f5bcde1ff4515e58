"""Datasets for trials: find, decode once, cache on disk, split (stratified, seeded).

Sources, in the order they are tried for ``cifar10``/``cifar100``:

* ``data`` is a tarball (.tar, .tar.gz, .tgz, .tar.xz, .tar.bz2) of an image folder, or a directory
  holding ``train/<class>/*`` and ``test/<class>/*`` (the torchvision ``ImageFolder`` layout);
* ``data`` is a torchvision CIFAR root (``cifar-10-batches-py`` / ``cifar-100-python`` inside);
* no ``data``: ``<cache_dir>/torchvision`` is searched and, if allowed, downloaded into.

``folder`` datasets take ``dataset_cfg["path"]`` (or ``data``) and must use the image-folder layout.
Every source is decoded once into uint8 tensors N×3×32×32 (images of another size are resized) and
saved under ``cache_dir`` keyed by a sha256 of the source's contents, so a second load only reads
one file. Class indices follow sorted class-folder names (the ``ImageFolder`` convention).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm")
CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
DATASET_NAMES = ("cifar10", "cifar100", "folder")
# Bump when the decoded format changes, so that old cache files are not read.
CACHE_FORMAT = 1
DOWNLOAD_TIMEOUT_S = 20.0


class DataUnavailableError(RuntimeError):
    """The dataset could not be found or fetched; the message says how to point at it."""


@dataclass
class DataSplits:
    """Decoded train/val/test splits: uint8 images N×3×32×32 and int64 labels."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    checksum: str
    source: str = ""
    _on_device: dict[str, DataSplits] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def to(self, device: torch.device | str) -> DataSplits:
        """These splits on a device; the copy is memoised so that trials share one resident copy."""
        device = torch.device(device)
        if all(t.device == device for t in self._tensors()):
            return self
        key = str(device)
        if key not in self._on_device:
            tx, ty, vx, vy, sx, sy = (t.to(device) for t in self._tensors())
            self._on_device[key] = DataSplits(
                tx, ty, vx, vy, sx, sy, self.classes, self.checksum, self.source
            )
        return self._on_device[key]

    def _tensors(self) -> list[Tensor]:
        return [self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y]


@dataclass
class DecodedDataset:
    """A whole dataset as decoded from its source, before splitting."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    checksum: str


@dataclass(frozen=True)
class Source:
    """Where a dataset's files are and in which format."""

    kind: str  # "tarball" | "folder" | "torchvision"
    path: Path
    name: str  # dataset name: cifar10 | cifar100 | folder


def load_dataset(
    dataset_cfg: dict[str, Any], data: str | None, cache_dir: Path, download: bool = True
) -> DataSplits:
    """Load (decoding once, then from the cache) and split the dataset a trial config names."""
    name = str(dataset_cfg.get("name", "cifar10")).lower()
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    cache_dir = Path(cache_dir).expanduser()
    source = find_source(name, dataset_cfg.get("path"), data, cache_dir, download)
    decoded = load_decoded(source, cache_dir)
    expected = CIFAR_NUM_CLASSES.get(name)
    if expected is not None and len(decoded.classes) != expected:
        raise ValueError(
            f"dataset {name} should have {expected} classes, but {source.path} has "
            f"{len(decoded.classes)}; use dataset name 'folder' for other image folders"
        )
    return split_dataset(
        decoded,
        val_size=int(dataset_cfg.get("val_size", 5000)),
        train_subset=dataset_cfg.get("train_subset"),
        seed=int(dataset_cfg.get("split_seed", 0)),
        source=str(source.path),
    )


# ---------------------------------------------------------------------------------------------
# Finding the source


def find_source(
    name: str, path: str | None, data: str | None, cache_dir: Path, download: bool
) -> Source:
    """Decide where the dataset's files are; raise DataUnavailableError if nowhere."""
    if name == "folder":
        location = path or data
        if not location:
            raise DataUnavailableError(
                "dataset 'folder' needs a path: set dataset.path in the study spec or start the "
                "worker with --data /path/to/folder-or-tarball"
            )
        source = _image_folder_source(Path(location).expanduser(), name)
        if source is None:
            raise DataUnavailableError(
                f"{location} is neither an image folder with train/<class>/ and test/<class>/ "
                "nor a tarball of one"
            )
        return source
    if data:
        root = Path(data).expanduser()
        source = _image_folder_source(root, name) or _torchvision_source(root, name)
        if source is not None:
            return source
        if not root.exists():
            raise DataUnavailableError(_unavailable_message(name, f"{root} does not exist"))
        return _download(name, root, download)
    root = cache_dir / "torchvision"
    return _torchvision_source(root, name) or _download(name, root, download)


def _image_folder_source(path: Path, name: str) -> Source | None:
    if path.is_file() and path.name.lower().endswith(TAR_SUFFIXES):
        return Source("tarball", path, name)
    if path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir():
        return Source("folder", path, name)
    return None


def _torchvision_source(root: Path, name: str) -> Source | None:
    if name in CIFAR_DIRS and (root / CIFAR_DIRS[name]).is_dir():
        return Source("torchvision", root, name)
    return None


def _download(name: str, root: Path, allowed: bool) -> Source:
    if not allowed:
        raise DataUnavailableError(_unavailable_message(name, f"nothing found in {root}"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            _torchvision_class(name)(str(root), train=True, download=True)
            _torchvision_class(name)(str(root), train=False, download=True)
    except Exception as exc:  # offline machines fail in many ways (DNS, timeouts, proxies)
        raise DataUnavailableError(
            _unavailable_message(name, f"download into {root} failed: {exc}")
        ) from exc
    return Source("torchvision", root, name)


def _unavailable_message(name: str, reason: str) -> str:
    folder = CIFAR_DIRS.get(name, "cifar-10-batches-py")
    return (
        f"{name} is not available ({reason}). Point the worker at the data: "
        f"--data /path/to/cifar-root (the folder holding {folder}/) or ACTSEARCH_DATA=/path/to/"
        "cifar-root, or an image-folder tarball such as --data ../shared/data/cifar10-jpg.tar.xz"
    )


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision's downloader has no timeout of its own; without one an offline machine can hang.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _torchvision_class(name: str) -> Any:
    import torchvision.datasets as tvd

    return {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]


# ---------------------------------------------------------------------------------------------
# Checksums and the decoded cache


def source_checksum(source: Source, cache_dir: Path) -> str:
    """sha256 of the source's contents, memoised on disk by a cheap (path, size, mtime) key."""
    files = _source_files(source)
    stamp = hashlib.sha256()
    for rel, path in files:
        st = path.stat()
        stamp.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = f"{source.path.resolve()}|{stamp.hexdigest()}"
    memo_path = cache_dir / "checksums.json"
    memo = _read_json(memo_path)
    if key in memo:
        return str(memo[key])
    digest = hashlib.sha256()
    for rel, path in files:
        if len(files) > 1:  # a single file's checksum is the plain sha256 of that file
            digest.update(rel.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    memo[key] = digest.hexdigest()
    _write_json_atomic(memo_path, memo)
    return digest.hexdigest()


def _source_files(source: Source) -> list[tuple[str, Path]]:
    if source.kind == "tarball":
        return [(source.path.name, source.path)]
    root = source.path / CIFAR_DIRS[source.name] if source.kind == "torchvision" else source.path
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    if source.kind == "folder":
        paths = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    return [(p.relative_to(root).as_posix(), p) for p in paths]


def load_decoded(source: Source, cache_dir: Path) -> DecodedDataset:
    """Decoded dataset from the cache, decoding and caching it on a miss."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    checksum = source_checksum(source, cache_dir)
    cache_path = cache_dir / f"decoded-{source.name}-{checksum[:20]}-v{CACHE_FORMAT}.pt"
    if cache_path.exists():
        try:
            return _read_cache(cache_path, checksum)
        except Exception as exc:  # a truncated or foreign file: decode again
            log.warning("ignoring unreadable cache %s: %s", cache_path, exc)
    log.info("decoding %s (%s) into %s", source.path, source.kind, cache_path)
    decoded = _decode(source, checksum)
    _write_cache(cache_path, decoded)
    return decoded


def _read_cache(path: Path, checksum: str) -> DecodedDataset:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob["checksum"] != checksum:
        raise ValueError("checksum mismatch")
    return DecodedDataset(
        blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"],
        list(blob["classes"]), checksum,
    )  # fmt: skip


def _write_cache(path: Path, decoded: DecodedDataset) -> None:
    blob = {
        "train_x": decoded.train_x, "train_y": decoded.train_y,
        "test_x": decoded.test_x, "test_y": decoded.test_y,
        "classes": decoded.classes, "checksum": decoded.checksum,
    }  # fmt: skip
    # Several worker processes may decode at once: write aside, then rename atomically.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(value, fh, indent=1)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Decoding


def _decode(source: Source, checksum: str) -> DecodedDataset:
    if source.kind == "torchvision":
        return _decode_torchvision(source, checksum)
    files = _tar_images(source.path) if source.kind == "tarball" else _folder_images(source.path)
    return _decode_image_files(files, checksum, str(source.path))


# File names inside a torchvision CIFAR folder: train batches, test batch, meta; label keys.
CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"),
    "cifar100": (["train"], "test", "meta"),
}
CIFAR_KEYS = {"cifar10": ("labels", "label_names"), "cifar100": ("fine_labels", "fine_label_names")}


def _decode_torchvision(source: Source, checksum: str) -> DecodedDataset:
    # The pickles are read directly (torchvision's classes would md5 every file again).
    folder = source.path / CIFAR_DIRS[source.name]
    train_files, test_file, meta_file = CIFAR_FILES[source.name]
    label_key, names_key = CIFAR_KEYS[source.name]

    def read(names: list[str]) -> tuple[Tensor, Tensor]:
        batches = [_unpickle(folder / name) for name in names]
        images = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
        labels = [label for b in batches for label in b[label_key]]
        return torch.from_numpy(images.astype(np.uint8)), torch.tensor(labels, dtype=torch.int64)

    train_x, train_y = read(train_files)
    test_x, test_y = read([test_file])
    classes = [str(c) for c in _unpickle(folder / meta_file)[names_key]]
    return DecodedDataset(train_x, train_y, test_x, test_y, classes, checksum)


def _unpickle(path: Path) -> dict[str, Any]:
    import pickle

    with path.open("rb") as fh:
        # latin1: the official files are Python 2 pickles; it maps their byte strings to str.
        return dict(pickle.load(fh, encoding="latin1"))


def _split_member(name: str) -> tuple[str, str] | None:
    """(split, class) of an image path ending in <split>/<class>/<file>, else None."""
    parts = name.replace("\\", "/").split("/")
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    split, cls = parts[-3], parts[-2]
    if split not in ("train", "test") or cls.startswith("."):
        return None
    return split, cls


def _tar_images(path: Path) -> list[tuple[str, str, str, bytes]]:
    files = []
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            where = _split_member(member.name) if member.isfile() else None
            if where is None:
                continue
            fh = tar.extractfile(member)
            if fh is not None:
                files.append((where[0], where[1], member.name, fh.read()))
    return files


def _folder_images(root: Path) -> list[tuple[str, str, str, bytes]]:
    files = []
    for split in ("train", "test"):
        for path in sorted((root / split).glob("*/*")):
            where = _split_member(path.relative_to(root).as_posix())
            if where is not None and path.is_file():
                files.append((where[0], where[1], path.as_posix(), path.read_bytes()))
    return files


def _decode_image_files(
    files: list[tuple[str, str, str, bytes]], checksum: str, where: str
) -> DecodedDataset:
    classes = sorted({cls for _, cls, _, _ in files})
    if not classes or not any(s == "train" for s, *_ in files):
        raise DataUnavailableError(f"no train/<class>/<image> files found in {where}")
    index = {cls: i for i, cls in enumerate(classes)}
    files.sort(key=lambda f: (f[0], f[1], f[2]))  # deterministic order whatever the archive's
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for split in ("train", "test"):
        chosen = [f for f in files if f[0] == split]
        images = np.empty((len(chosen), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        for i, (_, _, _, raw) in enumerate(chosen):
            images[i] = decode_image(raw)
        labels = torch.tensor([index[cls] for _, cls, _, _ in chosen], dtype=torch.int64)
        out[split] = (torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), labels)
    return DecodedDataset(*out["train"], *out["test"], classes, checksum)


def decode_image(raw: bytes) -> np.ndarray:
    """One encoded image as a 32×32×3 uint8 array (resized if it is another size)."""
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        rgb = img.convert("RGB")
        if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
            rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Splitting


def split_dataset(
    decoded: DecodedDataset,
    val_size: int,
    train_subset: int | None,
    seed: int,
    source: str = "",
) -> DataSplits:
    """Take a stratified, seeded validation split from train, then an optional train subset."""
    n = len(decoded.train_y)
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be between 1 and {n - 1} for this dataset, not {val_size}")
    generator = torch.Generator().manual_seed(seed)
    val_idx, rest_idx = stratified_take(decoded.train_y, val_size, generator)
    if train_subset is not None:
        if not 0 < int(train_subset) <= len(rest_idx):
            raise ValueError(
                f"train_subset must be between 1 and {len(rest_idx)} after the validation "
                f"split, not {train_subset}"
            )
        chosen, _ = stratified_take(decoded.train_y[rest_idx], int(train_subset), generator)
        rest_idx = rest_idx[chosen]
    return DataSplits(
        train_x=decoded.train_x[rest_idx],
        train_y=decoded.train_y[rest_idx],
        val_x=decoded.train_x[val_idx],
        val_y=decoded.train_y[val_idx],
        test_x=decoded.test_x,
        test_y=decoded.test_y,
        classes=decoded.classes,
        checksum=decoded.checksum,
        source=source,
    )


def stratified_take(
    labels: Tensor, count: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Indices of `count` items drawn per class in proportion to class sizes, and the rest."""
    classes, sizes = torch.unique(labels, return_counts=True)
    quotas = _largest_remainder(sizes.tolist(), count)
    taken, rest = [], []
    for cls, quota in zip(classes.tolist(), quotas, strict=True):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        taken.append(members[:quota])
        rest.append(members[quota:])
    # Sorted, so that a split never depends on the class order above.
    return torch.cat(taken).sort().values, torch.cat(rest).sort().values


def _largest_remainder(sizes: list[int], count: int) -> list[int]:
    total = sum(sizes)
    exact = [count * s / total for s in sizes]
    quotas = [int(e) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: exact[i] - quotas[i], reverse=True)
    for i in order[: count - sum(quotas)]:
        quotas[i] += 1
    return quotas
