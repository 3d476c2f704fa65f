"""Built-in datasets as uint8 tensors in memory, with train / val / test splits and batch augmentation.

Datasets by name (:data:`DATASETS`):

========================  =========  ========  =====================================================
name                      images     classes   source (``data_dir``)
========================  =========  ========  =====================================================
``digits``                1x8x8      10        scikit-learn's ``load_digits`` (no files needed);
                                               test = fixed stratified 20 % holdout (360 images)
``fashion-mnist``         1x28x28    10        the four IDX ``.gz`` files (upstream release, Debian
                                               ``dataset-fashion-mnist``, torchvision's ``raw/``);
                                               default ``/usr/share/datasets/fashion-mnist``
``cifar10``               3x32x32    10        torchvision's ``cifar-10-batches-py`` or an
                                               ImageFolder tree ``train/<class>/*``, ``test/<class>/*``
                                               (or its parent, e.g. one holding ``cifar10-jpeg/``)
``imagefolder``           any        any       ``train/<class>/*``, ``test/<class>/*``, optional ``val/``
========================  =========  ========  =====================================================

The validation split is held out from train with a fixed seed (defaults: cifar10 5000 as in AMC,
fashion-mnist 5000, digits 300, imagefolder 10 % or its ``val/`` folder) and is what the search
rewards are computed on; test is only for reporting. Every split is stored in a fixed random order,
so any prefix (``tensors(split, limit=n)``) is a uniform sample of it.

Image folders are decoded once (``torchvision.io``) and cached as a ``.pt`` file in
``<root>/.amc_cache/`` (or ``~/.cache/amc/`` when the data directory is read-only), so that the
second load takes a fraction of a second.

Augmentation works on whole uint8 batches with tensor ops: random crop with zero padding (4 px for
32x32, 2 px for 28x28, 1 px for 8x8) and, except for digits, horizontal flips. Normalisation uses
per-channel mean/std (standard constants for CIFAR-10 and Fashion-MNIST, train-split statistics for
the others).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amc._registry import Registry
from amc.errors import AmcError
from amc.utils import as_size, atomic_torch_save

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "TensorImageDataset",
    "BatchLoader",
    "get_dataset",
    "AugmentSpec",
    "augment_batch",
    "cutout_batch",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
_CACHE_VERSION = 1

#: name -> loader ``(data_dir, image_size) -> _RawData``; use :func:`get_dataset`.
DATASETS: Registry[Callable[..., _RawData]] = Registry("dataset")


# --------------------------------------------------------------------------------------------------
# containers


class TensorImageDataset:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64, in memory (the loaders make them so)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def subset(self, idx: torch.Tensor) -> TensorImageDataset:
        return TensorImageDataset(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class AugmentSpec:
    """Random crop with ``pad`` pixels of zero padding, plus horizontal flips when ``flip``."""

    pad: int = 0
    flip: bool = False


def augment_batch(x: torch.Tensor, spec: AugmentSpec, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly crop (after zero padding) and flip a batch ``(N, C, H, W)`` of any dtype.

    The random numbers come from ``generator`` on the CPU, so a seeded generator gives the same
    augmentation on every device.
    """
    n, c, h, w = x.shape
    if n == 0 or not (spec.pad or spec.flip):
        return x
    p = spec.pad
    oy = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
    ox = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
    flip = (torch.rand(n, generator=generator) < 0.5).tolist() if spec.flip else [False] * n
    padded = torch.nn.functional.pad(x, (p, p, p, p)) if p else x  # (N, C, H+2p, W+2p)
    out = torch.empty_like(x)
    for i, (y0, x0, f) in enumerate(zip(oy, ox, flip)):  # on the CPU ~3x faster than one gather
        crop = padded[i, :, y0 : y0 + h, x0 : x0 + w]
        out[i] = crop.flip(2) if f else crop
    return out


@dataclass(eq=False, repr=False)
class BatchLoader:
    """A light iterator over (optionally shuffled, augmented) normalised batches ``(x, y)``.

    No worker processes: images are uint8 tensors in memory, batches are gathered by index and
    augmented with tensor ops. With ``seed`` set, epoch ``e`` (see :meth:`set_epoch`) always yields
    the same order and augmentation, which makes training resumable and identical on every rank.
    ``rank``/``world_size`` shard each epoch's order for DistributedDataParallel (every rank gets
    ``len(dataset) // world_size`` samples; ``batch_size`` is per rank).
    """

    data: TensorImageDataset
    _: KW_ONLY
    mean: torch.Tensor
    std: torch.Tensor
    batch_size: int
    shuffle: bool = False
    augment: AugmentSpec | None = None
    cutout: int = 0
    device: torch.device | str | None = None
    drop_last: bool = False
    seed: int | None = None
    rank: int = 0
    world_size: int = 1
    epoch: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.cutout < 0:
            raise AmcError(f"cutout must be >= 0 pixels, got {self.cutout}")
        self.augment = self.augment if self.augment and (self.augment.pad or self.augment.flip) else None
        self.cutout = int(self.cutout)
        self.device = torch.device(self.device or "cpu")

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling/augmentation stream of ``epoch`` (used when ``seed`` is set)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.data) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        if self.seed is None:
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        else:
            gen = torch.Generator().manual_seed(int(self.seed) * 100_003 + self.epoch)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        order = order[: n - n % self.world_size][self.rank :: self.world_size]  # this rank's shard
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            x = self.data.images[idx]
            if self.augment is not None:
                x = augment_batch(x, self.augment, generator=gen)
            y = self.data.labels[idx]
            x = _normalize(x.to(self.device, non_blocking=True), self.mean, self.std)
            if self.cutout:
                x = cutout_batch(x, self.cutout, generator=gen)
            yield x, y.to(self.device)


def cutout_batch(x: torch.Tensor, size: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square of every image of a normalised batch ``(N, C, H, W)``, in place.

    Cutout (DeVries & Taylor 2017, arXiv:1708.04552): the square's centre is uniform over the image and
    the square is clipped at the borders, so some images lose less than ``size**2`` pixels. Zero is the
    dataset mean after normalisation. The centres come from ``generator`` on the CPU.
    """
    n, _, h, w = x.shape
    if n == 0 or size <= 0:
        return x
    cy = torch.randint(0, h, (n, 1), generator=generator)
    cx = torch.randint(0, w, (n, 1), generator=generator)
    lo = size // 2
    rows = torch.arange(h) - cy + lo  # in [0, size) inside the square
    cols = torch.arange(w) - cx + lo
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]  # (N, H, W)
    return x.masked_fill_(inside[:, None].to(x.device), 0.0)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 ``(x / 255 - mean) / std``."""
    m = mean.to(x.device).view(1, -1, 1, 1)
    s = std.to(x.device).view(1, -1, 1, 1)
    return (x.float().div_(255.0) - m) / s


@dataclass(eq=False)
class DatasetSplits:
    """Train / val / test splits of one dataset, uint8 in memory, plus what models need to know.

    ``mean``/``std`` are per-channel, in [0, 1] pixel units. ``augment`` is the train-time
    augmentation the dataset calls for. ``info`` records how the splits were made (for checkpoints).
    """

    name: str
    train: TensorImageDataset
    val: TensorImageDataset
    test: TensorImageDataset
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    info: dict[str, Any] = field(default_factory=dict)
    _cache: dict[tuple[str, str, int | None], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False
    )

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    def split(self, name: str) -> TensorImageDataset:
        if name not in ("train", "val", "test"):
            raise AmcError(f"unknown split {name!r}; valid: train, val, test")
        return getattr(self, name)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images ``(N, C, H, W)`` -> normalised float32 (on ``x``'s device)."""
        return _normalize(x, torch.tensor(self.mean), torch.tensor(self.std))

    def loader(self, split: str, *, augment: bool = False, **options: Any) -> BatchLoader:
        """Iterable of normalised float ``(x, y)`` batches of ``split``.

        ``augment`` applies the dataset's crop/flip; ``options`` are :class:`BatchLoader`'s
        (``batch_size``, ``shuffle``, ``cutout`` > 0 to also mask a square of that side, ``device``,
        ``drop_last``, ``seed``, ``rank``, ``world_size``).
        """
        return BatchLoader(self.split(split), mean=torch.tensor(self.mean), std=torch.tensor(self.std),
                           augment=self.augment if augment else None, **options)

    def tensors(
        self, split: str, *, device: torch.device | str | None = None, limit: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole normalised split ``(x float32 (N, C, H, W), y int64 (N,))``, cached.

        ``limit`` keeps the first ``limit`` samples (a uniform sample: splits are stored shuffled).
        Do not modify the returned tensors in place: they are shared by later calls.
        """
        data = self.split(split)
        n = len(data) if limit is None else max(0, min(int(limit), len(data)))
        dev = torch.device(device or "cpu")
        key = (split, str(dev), n)
        if key not in self._cache:
            self._cache[key] = (self.normalize(data.images[:n].to(dev)), data.labels[:n].to(dev))
        return self._cache[key]

    def calibration_batches(
        self, n: int, batch_size: int = 128, seed: int = 0, *, device: torch.device | str | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` normalised, unaugmented train batches drawn without replacement with ``seed``.

        Used for pruning reconstruction (feature maps) and activation-range calibration. Fewer
        batches come back when the train split is smaller than ``n * batch_size``.
        """
        if n < 1 or batch_size < 1:
            raise AmcError(f"calibration needs n >= 1 batches of batch_size >= 1, got {n} x {batch_size}")
        g = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(len(self.train), generator=g)[: n * batch_size]
        dev = device or "cpu"
        return [(self.normalize(self.train.images[idx].to(dev)), self.train.labels[idx].to(dev))
                for idx in order.split(batch_size)]

    def summary(self) -> str:
        c, (h, w) = self.in_channels, self.image_size
        return (f"{self.name}: {c}x{h}x{w}, {self.num_classes} classes, train {len(self.train)}, "
                f"val {len(self.val)}, test {len(self.test)}")


# --------------------------------------------------------------------------------------------------
# raw loaders


@dataclass
class _RawData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    default_val: int | float
    augment: AugmentSpec
    mean: tuple[float, ...] | None = None  # None: computed from the train split
    std: tuple[float, ...] | None = None
    val_x: torch.Tensor | None = None  # an explicit val split (imagefolder's val/)
    val_y: torch.Tensor | None = None
    source: str = ""


def get_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    val_size: int | float | None = None,
    seed: int = 0,
    image_size: int | Sequence[int] | None = None,
) -> DatasetSplits:
    """Load a dataset by name and split it into train / val / test.

    Args:
        name: one of :data:`DATASETS` (``digits``, ``fashion-mnist``, ``cifar10``, ``imagefolder``).
        data_dir: where the files are (see the module docstring; ``digits`` needs none).
        val_size: images held out from train for validation: a count, or a fraction in (0, 1);
            ``None`` takes the dataset's default. 0 gives an empty val split.
        seed: the seed of the val holdout (the test split never depends on it).
        image_size: (H, W) or an int; resize ``imagefolder`` images to it (needed when they differ).
    """
    loader = DATASETS.get(name)
    size = None if image_size is None else as_size(image_size)
    path = Path(data_dir).expanduser() if data_dir is not None else None
    raw = _maybe_resize(loader(path, image_size=size), size)  # image folders arrive at ``size`` already

    # the test split is stored in a fixed random order (prefixes are uniform samples)
    test_order = torch.randperm(len(raw.test_y), generator=torch.Generator().manual_seed(0))
    test = TensorImageDataset(raw.test_x[test_order], raw.test_y[test_order])
    g = torch.Generator().manual_seed(int(seed))
    n_train, full = len(raw.train_y), TensorImageDataset(raw.train_x, raw.train_y)
    if raw.val_x is not None and val_size is None:
        vo = torch.randperm(len(raw.val_y), generator=g)
        val = TensorImageDataset(raw.val_x[vo], raw.val_y[vo])
        train, n_val = full.subset(torch.randperm(n_train, generator=g)), len(val)
    else:
        n_val = _resolve_val_size(raw.default_val if val_size is None else val_size, n_train)
        order = torch.randperm(n_train, generator=g)
        val, train = full.subset(order[:n_val]), full.subset(order[n_val:])

    mean, std = raw.mean, raw.std
    if mean is None or std is None:
        xs = train.images.float().div_(255.0)  # (N, C, H, W)
        mean = tuple(float(v) for v in xs.mean(dim=(0, 2, 3)))
        std = tuple(max(float(v), 1e-3) for v in xs.std(dim=(0, 2, 3)))
    splits = DatasetSplits(
        name=name.lower(), train=train, val=val, test=test, num_classes=len(raw.classes),
        classes=list(raw.classes), mean=mean, std=std, augment=raw.augment,
        info={"dataset": name.lower(), "data_dir": raw.source, "val_size": n_val, "seed": int(seed)},
    )
    logger.info("%s", splits.summary())
    return splits


def _resolve_val_size(val_size: int | float, n_train: int) -> int:
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise AmcError(f"val_size must be a count or a fraction in (0, 1), got {val_size!r}")
    if isinstance(val_size, float) and not float(val_size).is_integer():
        if not 0.0 < val_size < 1.0:
            raise AmcError(f"a fractional val_size must be in (0, 1), got {val_size}")
        n = int(round(val_size * n_train))
    else:
        n = int(val_size)
    if n < 0 or n >= n_train:
        raise AmcError(f"val_size {val_size} must be in [0, {n_train - 1}] (the train split has {n_train} images)")
    return n


# ---- digits


@DATASETS.register("digits")
def _load_digits(data_dir: Path | None, *, image_size: tuple[int, int] | None = None) -> _RawData:
    """scikit-learn's 8x8 handwritten digits (1797 images): ships with scikit-learn, offline."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    tr, te = train_test_split(np.arange(len(d.target)), test_size=0.2, stratify=d.target, random_state=0)
    x, y = torch.from_numpy(images), torch.from_numpy(d.target.astype(np.int64))
    return _RawData(
        train_x=x[tr], train_y=y[tr], test_x=x[te], test_y=y[te],
        classes=[str(i) for i in range(10)], default_val=300, augment=AugmentSpec(pad=1, flip=False),
        source="sklearn.datasets.load_digits",
    )


# ---- fashion-mnist

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise AmcError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise AmcError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {arr.size}")
    return arr.reshape(dims)


@DATASETS.register("fashion-mnist")
def _load_fashion_mnist(data_dir: Path | None, *, image_size: tuple[int, int] | None = None) -> _RawData:
    """Fashion-MNIST from the four IDX files (``.gz`` or not), 60k train + 10k test, 28x28 grey."""
    root = data_dir if data_dir is not None else FASHION_MNIST_DIR
    candidates = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw", root / "raw"]
    for cand in candidates:
        found = {key: next((p for p in (cand / (stem + ".gz"), cand / stem) if p.is_file()), None)
                 for key, stem in _FMNIST_FILES.items()}
        if all(found.values()):
            break
    else:
        raise AmcError(
            f"Fashion-MNIST not found: looked for {', '.join(s + '.gz' for s in _FMNIST_FILES.values())} in "
            f"{', '.join(str(c) for c in candidates)}. Get it with `apt install dataset-fashion-mnist` "
            f"(installs to {FASHION_MNIST_DIR}) or download the four files from the upstream release "
            "(https://github.com/zalandoresearch/fashion-mnist, data/fashion), then pass --data-dir DIR"
        )
    arrays = {k: _read_idx(p) for k, p in found.items()}
    return _RawData(
        train_x=torch.from_numpy(arrays["train_x"].copy())[:, None],
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=torch.from_numpy(arrays["test_x"].copy())[:, None],
        test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
        classes=list(FASHION_MNIST_CLASSES), default_val=5000, augment=AugmentSpec(pad=2, flip=True),
        mean=(0.2860,), std=(0.3530,), source=str(found["train_x"].parent),
    )


# ---- cifar10

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _has_split_dirs(p: Path) -> bool:
    return (p / "train").is_dir() and (p / "test").is_dir()


@DATASETS.register("cifar10")
def _load_cifar10(data_dir: Path | None, *, image_size: tuple[int, int] | None = None) -> _RawData:
    """CIFAR-10 from torchvision's python batches or from an ImageFolder tree (e.g. JPEG export)."""
    roots = [data_dir] if data_dir is not None else [Path("data"), Path.home() / ".cache" / "amc" / "data"]
    looked: list[str] = []
    for root in roots:
        for cand in (root, root / "cifar-10-batches-py", root / "cifar10-jpeg", root / "cifar10"):
            looked.append(str(cand))
            if (cand / "data_batch_1").is_file() and (cand / "test_batch").is_file():
                return _read_cifar_batches(cand)
            if _has_split_dirs(cand):
                raw = _read_image_folder(cand, image_size=image_size)
                if len(raw.classes) != 10:
                    raise AmcError(f"{cand}: CIFAR-10 needs 10 class folders, found {len(raw.classes)}")
                raw.default_val, raw.augment = 5000, AugmentSpec(pad=4, flip=True)
                raw.mean, raw.std = CIFAR10_MEAN, CIFAR10_STD
                return raw
    raise AmcError(
        "CIFAR-10 not found: looked for torchvision's cifar-10-batches-py/ (data_batch_1..5, test_batch) "
        f"or an ImageFolder tree with train/ and test/ in {', '.join(looked)}. Pass --data-dir DIR pointing "
        "at one of them, e.g. extract an ImageFolder tarball with `tar xzf cifar10-jpeg.tar.gz -C data` "
        "or download the python batches with torchvision.datasets.CIFAR10(root, download=True)"
    )


def _read_cifar_batches(root: Path) -> _RawData:
    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = root / name
        try:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="bytes")
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            raise AmcError(f"cannot read CIFAR-10 batch {path}: {e}") from None
        return (np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32),
                np.asarray(d[b"labels"], dtype=np.int64))

    parts = [load(f"data_batch_{i}") for i in range(1, 6)]
    tx, ty = load("test_batch")
    classes = list(CIFAR10_CLASSES)
    meta = root / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            classes = [c.decode() for c in pickle.load(f, encoding="bytes")[b"label_names"]]
    return _RawData(
        train_x=torch.from_numpy(np.concatenate([p[0] for p in parts])),
        train_y=torch.from_numpy(np.concatenate([p[1] for p in parts])),
        test_x=torch.from_numpy(tx), test_y=torch.from_numpy(ty), classes=classes, default_val=5000,
        augment=AugmentSpec(pad=4, flip=True), mean=CIFAR10_MEAN, std=CIFAR10_STD, source=str(root),
    )


# ---- image folders


@DATASETS.register("imagefolder")
def _load_imagefolder(data_dir: Path | None, *, image_size: tuple[int, int] | None = None) -> _RawData:
    """Any ``train/<class>/*`` + ``test/<class>/*`` (+ optional ``val/<class>/*``) tree."""
    if data_dir is None:
        raise AmcError("the imagefolder dataset needs --data-dir DIR with train/<class>/* and test/<class>/*")
    root = data_dir
    if not _has_split_dirs(root):
        subs = [p for p in root.iterdir() if p.is_dir() and _has_split_dirs(p)] if root.is_dir() else []
        if len(subs) != 1:
            raise AmcError(f"{root}: expected train/ and test/ folders of class folders (train/<class>/*.jpg)")
        root = subs[0]
    return _read_image_folder(root, image_size=image_size)


def _list_split(split_dir: Path, classes: list[str] | None) -> tuple[list[str], list[str], list[int]]:
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    elif set(found) - set(classes):
        raise AmcError(f"{split_dir}: classes {sorted(set(found) - set(classes))} are not in train/")
    files, labels = [], []
    for ci, cname in enumerate(classes):
        cdir = split_dir / cname
        if not cdir.is_dir():
            continue
        with os.scandir(cdir) as it:
            names = sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        prefix = str(cdir) + os.sep
        files += [prefix + n for n in names]
        labels += [ci] * len(names)
    if not files:
        raise AmcError(f"{split_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    return classes, files, labels


def _fingerprint(files: list[str], root: Path, image_size: tuple[int, int] | None) -> str:
    h = hashlib.sha256()
    h.update(f"v{_CACHE_VERSION} {image_size}".encode())
    skip = len(str(root)) + 1
    for f in files:
        st = os.stat(f)
        h.update(f"{f[skip:]}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return h.hexdigest()


def _cache_paths(root: Path) -> list[Path]:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [root / ".amc_cache" / "decoded.pt", Path.home() / ".cache" / "amc" / f"imagefolder-{key}.pt"]


def _read_image_folder(root: Path, *, image_size: tuple[int, int] | None) -> _RawData:
    classes, tr_files, tr_labels = _list_split(root / "train", None)
    _, te_files, te_labels = _list_split(root / "test", classes)
    _, va_files, va_labels = _list_split(root / "val", classes) if (root / "val").is_dir() else (None, [], [])
    all_files = tr_files + te_files + va_files
    fp = _fingerprint(all_files, root, image_size)

    for cache in _cache_paths(root):
        if cache.is_file():
            try:
                blob = torch.load(cache, map_location="cpu", weights_only=True)
            except Exception as e:  # a corrupt cache is rebuilt, never fatal
                logger.warning("ignoring unreadable cache %s: %s", cache, e)
                continue
            if blob.get("fingerprint") == fp:
                logger.info("loaded decoded images from cache %s", cache)
                images = blob["images"]
                break
    else:
        images = _decode_images(all_files, image_size=image_size)
        for cache in _cache_paths(root):
            try:
                atomic_torch_save({"fingerprint": fp, "images": images}, cache)
                logger.info("cached decoded images in %s", cache)
                break
            except OSError as e:
                logger.debug("cannot write cache %s: %s", cache, e)

    n_tr, n_te = len(tr_files), len(te_files)
    labels = torch.tensor(tr_labels + te_labels + va_labels, dtype=torch.int64)
    h, w = images.shape[2:]
    raw = _RawData(
        train_x=images[:n_tr], train_y=labels[:n_tr],
        test_x=images[n_tr : n_tr + n_te], test_y=labels[n_tr : n_tr + n_te],
        classes=classes, default_val=0.1,
        augment=AugmentSpec(pad=max(1, min(h, w) // 8), flip=True), source=str(root),
    )
    if va_files:
        raw.val_x, raw.val_y = images[n_tr + n_te :], labels[n_tr + n_te :]
    return raw


def _decode_images(files: list[str], *, image_size: tuple[int, int] | None) -> torch.Tensor:
    """Decode image files into one uint8 ``(N, C, H, W)`` tensor (``torchvision.io``)."""
    logger.info("decoding %d images (cached for next time)...", len(files))
    with warnings.catch_warnings():  # torchvision >= 0.29 deprecates its decoders in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_image, read_file

        first = decode_image(read_file(files[0]), mode=ImageReadMode.UNCHANGED)
        mode = ImageReadMode.GRAY if first.shape[0] in (1, 2) else ImageReadMode.RGB
        out: list[torch.Tensor] = []
        for f in files:  # on the CPU a list given to decode_jpeg is decoded one by one too
            try:
                out.append(decode_image(read_file(f), mode=mode))
            except RuntimeError as e:
                raise AmcError(f"cannot decode image {f}: {e}") from None
    sizes = {tuple(t.shape[1:]) for t in out}
    if image_size is None and len(sizes) > 1:
        raise AmcError(
            f"images have different sizes ({', '.join(f'{h}x{w}' for h, w in sorted(sizes)[:4])}, ...); "
            "pass image_size (--image-size H or H,W) to resize them"
        )
    if image_size is not None:
        from torchvision.transforms.v2.functional import resize

        out = [t if tuple(t.shape[1:]) == image_size else resize(t, list(image_size), antialias=True) for t in out]
    return torch.stack(out)


def _maybe_resize(raw: _RawData, image_size: tuple[int, int] | None) -> _RawData:
    if image_size is None or tuple(raw.train_x.shape[2:]) == tuple(image_size):
        return raw
    from torchvision.transforms.v2.functional import resize

    # image folders (the only ones with a val split) arrive decoded at image_size
    h, w = image_size
    raw.train_x, raw.test_x = (resize(x, [h, w], antialias=True) for x in (raw.train_x, raw.test_x))
    raw.augment = AugmentSpec(pad=max(1, min(h, w) // 8), flip=raw.augment.flip)
    return raw
