"""Datasets: split sizes, determinism, disjointness, augmentation, loaders, file formats, errors."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import amc.data as D
from amc.data import AugmentSpec, DatasetSplits, augment_batch, cutout_batch, get_dataset
from amc.errors import AmcError
from tests._paths import SHARED_DATASETS

SHARED = SHARED_DATASETS  # ../shared beside the checkout


def _rows(images: torch.Tensor, labels: torch.Tensor) -> list[bytes]:
    return sorted(img.numpy().tobytes() + bytes([int(y)]) for img, y in zip(images, labels))


def test_digits_splits(digits: DatasetSplits) -> None:
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1137, 300, 360)
    assert digits.num_classes == 10 and digits.in_channels == 1 and digits.image_size == (8, 8)
    assert digits.train.images.dtype == torch.uint8 and int(digits.train.images.max()) == 255
    assert not digits.augment.flip and digits.augment.pad == 1
    # test is a stratified 20 % holdout: 36 images per class
    counts = torch.bincount(digits.test.labels)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37


def test_digits_determinism_and_disjointness(digits: DatasetSplits) -> None:
    again = get_dataset("digits", seed=0)
    assert torch.equal(again.val.images, digits.val.images) and torch.equal(again.val.labels, digits.val.labels)
    other = get_dataset("digits", seed=1)
    assert not torch.equal(other.val.images, digits.val.images)
    assert _rows(other.test.images, other.test.labels) == _rows(digits.test.images, digits.test.labels)
    # train and val partition the same pool, which excludes test
    pool = get_dataset("digits", val_size=0)
    assert len(pool.val) == 0 and len(pool.train) == 1437
    both = _rows(torch.cat([digits.train.images, digits.val.images]), torch.cat([digits.train.labels, digits.val.labels]))
    assert both == _rows(pool.train.images, pool.train.labels)
    assert len(get_dataset("digits", val_size=0.25).val) == 359
    with pytest.raises(AmcError, match="val_size"):
        get_dataset("digits", val_size=5000)
    with pytest.raises(ValueError, match="fashion-mnist"):
        get_dataset("mnist-nope")


def test_loader_and_tensors(digits: DatasetSplits) -> None:
    ld = digits.loader("train", batch_size=100, shuffle=True, augment=True, seed=3)
    batches = list(ld)
    assert len(ld) == len(batches) == 12
    x, y = batches[0]
    assert x.shape == (100, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert sum(len(b[1]) for b in batches) == 1137
    assert torch.equal(list(ld)[0][0], x)  # same seed and epoch: same batches
    ld.set_epoch(1)
    assert not torch.equal(list(ld)[0][0], x)
    assert len(digits.loader("train", batch_size=100, drop_last=True)) == 11
    # sharding: ranks get disjoint, equally sized parts
    parts = [torch.cat([b[1] for b in digits.loader("val", batch_size=64, shuffle=True, seed=0, rank=r,
                                                    world_size=2)]) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 150
    xv, yv = digits.tensors("val")
    assert xv.shape == (300, 1, 8, 8) and abs(float(xv.mean())) < 0.2
    assert digits.tensors("val")[0] is xv
    assert torch.equal(digits.tensors("val", limit=50)[0], xv[:50])
    cal = digits.calibration_batches(3, 64, 0)
    assert [b[0].shape[0] for b in cal] == [64, 64, 64]
    assert torch.equal(digits.calibration_batches(3, 64, 0)[2][0], cal[2][0])
    with pytest.raises(AmcError, match="split"):
        digits.tensors("holdout")


def test_augment_batch_shapes_and_paths() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.full((16, 3, 32, 32), 255, dtype=torch.uint8)
    out = augment_batch(x, AugmentSpec(pad=4, flip=True), generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert (out == 0).any()  # some crops reach into the zero padding
    assert torch.equal(augment_batch(x, AugmentSpec(0, False)), x)
    # each image is its own crop of the zero-padded image, flipped or not, drawn from the generator
    imgs = torch.randint(0, 256, (8, 2, 6, 5), dtype=torch.uint8)
    out = augment_batch(imgs, AugmentSpec(pad=2, flip=True), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    oy, ox = torch.randint(0, 5, (8,), generator=g), torch.randint(0, 5, (8,), generator=g)
    flip = torch.rand(8, generator=g) < 0.5
    padded = torch.nn.functional.pad(imgs, (2, 2, 2, 2))
    for i in range(8):
        crop = padded[i, :, oy[i] : oy[i] + 6, ox[i] : ox[i] + 5]
        assert torch.equal(out[i], crop.flip(2) if flip[i] else crop)


def test_cutout_masks_one_clipped_square_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = cutout_batch(torch.ones(2000, 3, 32, 32), 16, generator=g)
    masked = x == 0
    assert torch.equal(masked[:, 0], masked[:, 2])  # the same square in every channel
    area = masked[:, 0].sum((1, 2))
    assert int(area.max()) == 16 * 16 and int(area.min()) >= 8 * 8  # clipped at most to a corner quarter
    for m in masked[:50, 0]:  # each mask is one axis-aligned rectangle
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert int(m.sum()) == len(rows) * len(cols) and len(rows) <= 16 and len(cols) <= 16
    assert torch.equal(cutout_batch(torch.ones(4, 1, 8, 8), 0), torch.ones(4, 1, 8, 8))


def test_loader_cutout_is_seeded(digits: DatasetSplits) -> None:
    def first_batch(cutout: int) -> torch.Tensor:
        return next(iter(digits.loader("train", batch_size=64, shuffle=True, augment=True, cutout=cutout, seed=3)))[0]

    a, b, plain = first_batch(4), first_batch(4), first_batch(0)
    assert torch.equal(a, b)  # same seed, same squares: resumable
    changed = (a != plain).flatten(1).any(1)
    assert changed.float().mean() > 0.9 and bool(((a == 0) | (a == plain)).all())
    with pytest.raises(AmcError, match="cutout must be >= 0"):
        digits.loader("train", batch_size=8, cutout=-1)


def test_missing_data_errors(tmp_path: Path) -> None:
    with pytest.raises(AmcError, match="dataset-fashion-mnist") as e:
        get_dataset("fashion-mnist", data_dir=tmp_path)
    assert str(tmp_path) in str(e.value) and "--data-dir" in str(e.value)
    with pytest.raises(AmcError, match="cifar-10-batches-py"):
        get_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(AmcError, match="train/"):
        get_dataset("imagefolder", data_dir=tmp_path)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    import gzip
    import struct

    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def test_fashion_mnist_idx_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 30)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    s = get_dataset("fashion-mnist", data_dir=tmp_path, val_size=20)
    assert (len(s.train), len(s.val), len(s.test)) == (100, 20, 30)
    assert s.image_size == (28, 28) and s.in_channels == 1 and s.augment == AugmentSpec(2, True)


@pytest.mark.skipif(not (SHARED / "fashion-mnist").exists(), reason="shared Fashion-MNIST not present")
def test_fashion_mnist_shared() -> None:
    s = get_dataset("fashion-mnist", data_dir=SHARED / "fashion-mnist")
    assert (len(s.train), len(s.val), len(s.test)) == (55000, 5000, 10000)
    assert s.classes[-1] == "Ankle boot"


def test_cifar_python_batches(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        (root / name).write_bytes(pickle.dumps(d))
    s = get_dataset("cifar10", data_dir=tmp_path, val_size=10)
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20)
    assert s.image_size == (32, 32) and s.classes[0] == "airplane"


def _write_tree(root: Path, sizes: dict[str, tuple[int, int]]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls, (h, w) in sizes.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                img.save(root / split / cls / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_imagefolder_decode_cache_and_resize(tmp_path: Path) -> None:
    _write_tree(tmp_path / "data", {"cat": (12, 12), "dog": (12, 12)})
    s = get_dataset("imagefolder", data_dir=tmp_path, val_size=2)  # the parent of a train/test tree
    assert s.classes == ["cat", "dog"] and s.in_channels == 3 and s.image_size == (12, 12)
    assert (len(s.train), len(s.val), len(s.test)) == (10, 2, 4)
    assert (tmp_path / "data" / ".amc_cache" / "decoded.pt").is_file()
    again = get_dataset("imagefolder", data_dir=tmp_path / "data", val_size=2)
    assert torch.equal(again.test.images, s.test.images)
    mixed = tmp_path / "mixed"
    _write_tree(mixed, {"a": (10, 10), "b": (14, 12)})
    with pytest.raises(AmcError, match="image_size"):
        get_dataset("imagefolder", data_dir=mixed)
    r = get_dataset("imagefolder", data_dir=mixed, image_size=8)
    assert r.image_size == (8, 8)


def _extract_cifar_subset(dest: Path, per_class: int = 3) -> None:
    counts: dict[str, int] = {}
    with tarfile.open(SHARED / "cifar10-jpeg.tar.gz") as tar:
        for m in tar:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) != 4:
                continue
            key = f"{parts[1]}/{parts[2]}"
            if counts.get(key, 0) < per_class:
                counts[key] = counts.get(key, 0) + 1
                tar.extract(m, dest, filter="data")
            if len(counts) == 20 and all(v >= per_class for v in counts.values()):
                break


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg.tar.gz").exists(), reason="shared CIFAR-10 tarball not present")
def test_cifar10_imagefolder_from_shared(tmp_path: Path) -> None:
    _extract_cifar_subset(tmp_path)
    s = get_dataset("cifar10", data_dir=tmp_path, val_size=5)  # the parent of cifar10-jpeg/
    assert s.classes == D.CIFAR10_CLASSES and s.image_size == (32, 32) and s.in_channels == 3
    assert len(s.train) + len(s.val) == 30 and len(s.test) == 30
    assert s.mean == D.CIFAR10_MEAN and s.augment == AugmentSpec(4, True)
