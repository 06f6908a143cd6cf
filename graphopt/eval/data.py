"""Datasets for candidate evaluation: CIFAR-10, user image data, synthetic segmentation and token tasks.

Everything is held in memory as tensors and batched with torch ops: the candidates graphopt trains are
small and the budgets short, so per-image Python work (PIL transforms, ``torch.utils.data`` workers) would
dominate the step time. Images are stored as NHWC (``uint8`` for 8-bit sources) and converted per batch to
normalized float NCHW; augmentation (4-px padded random crop + horizontal flip) runs on whole uint8 batches.

Entry point: :func:`load_dataset`. Named datasets:

* ``cifar10`` -- CIFAR-10 from ``cifar10_jpeg.npz`` (see :func:`find_cifar10` for the lookup order), falling
  back to the bundled 2,000/500-image demo subset when the full file is not found.
* ``cifar10-demo`` -- the bundled demo subset (always available, ships with the package).
* ``cifar_paste`` -- *synthetic* segmentation: CIFAR objects pasted onto other CIFAR images.
* ``assoc_recall`` / ``selective_copy`` -- *synthetic* token-sequence tasks (Mamba2/BERT-style models).

Anything else is treated as a path: an ImageFolder directory or an ``.npz`` file (see :func:`load_dataset`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IGNORE_INDEX",
    "ArrayDataset",
    "BatchLoader",
    "DataError",
    "DatasetInfo",
    "Splits",
    "associative_recall",
    "bundled_data_dir",
    "cache_dir",
    "cifar_paste",
    "decode_jpeg_images",
    "find_cifar10",
    "heldout_indices",
    "load_cifar10_arrays",
    "load_dataset",
    "load_image_folder",
    "load_npz_arrays",
    "prepare_batch",
    "selective_copying",
    "with_info",
]

#: Per-channel mean/std of the CIFAR-10 training set (true pixel std; the often-quoted 0.2023/0.1994/0.2010
#: are std of per-image means and under-normalize).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
#: Target value meaning "no target here" (PyTorch's ``cross_entropy`` default).
IGNORE_INDEX = -100

CIFAR10_FILE = "cifar10_jpeg.npz"
DEMO_FILE = "cifar10_demo.npz"
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}

Task = Literal["classification", "segmentation", "sequence"]


class DataError(ValueError):
    """Bad or missing dataset input; the message names the file and what to do about it."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the trainer need to know about a dataset.

    ``input_shape`` is per sample: ``(C, H, W)`` for images, ``(L,)`` for token sequences.
    ``num_classes`` is the number of output classes (segmentation: including background 0; sequences: the
    vocabulary size, since targets are tokens). ``mean``/``std`` are applied per channel after scaling uint8
    pixels to [0, 1] (float sources are used as given: mean 0, std 1).
    """

    name: str
    task: Task
    num_classes: int
    input_shape: tuple[int, ...]
    classes: tuple[str, ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    ignore_index: int = IGNORE_INDEX
    vocab_size: int | None = None
    source: str = ""
    synthetic: bool = False
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArrayDataset:
    """An in-memory split: ``x`` (NHWC uint8/float32 images or (N, L) int64 tokens) and int64 ``y``.

    ``y`` is (N,) class labels, (N, H, W) masks or (N, L) token targets (``IGNORE_INDEX`` = no target).
    """

    x: torch.Tensor
    y: torch.Tensor
    info: DatasetInfo

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"dataset {self.info.name!r}: x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def take(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ArrayDataset:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ArrayDataset(self.x[idx], self.y[idx], self.info)

    def subset(self, n: int, seed: int = 0, balanced: bool = True) -> ArrayDataset:
        """``n`` samples chosen with ``seed``; class-balanced (round-robin over classes) for classification."""
        if n >= len(self):
            return self
        rng = np.random.default_rng(seed)
        if balanced and self.info.task == "classification":
            idx = _balanced_indices(self.y.numpy(), n, rng)
        else:
            idx = np.sort(rng.permutation(len(self))[:n])
        return self.take(idx)


@dataclass
class Splits:
    """train / val / test splits of one dataset (``val`` may be empty when ``val_fraction=0``)."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    info: DatasetInfo

    def __getitem__(self, name: str) -> ArrayDataset:
        if name not in ("train", "val", "test"):
            raise KeyError(f"unknown split {name!r}; use 'train', 'val' or 'test'")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


# ----------------------------------------------------------------------------------------------------------
# Locating and decoding CIFAR-10
# ----------------------------------------------------------------------------------------------------------


def _project_root() -> Path | None:
    """Folder with pyproject.toml above this package (None for a non-editable install)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "graphopt").is_dir():
            return parent
    return None


def bundled_data_dir() -> Path:
    """``graphopt/data`` (package data shipped with graphopt)."""
    return Path(__file__).resolve().parent.parent / "data"


def cifar10_candidates() -> list[Path]:
    """Where :func:`find_cifar10` looks for the full file, in order."""
    out: list[Path] = []
    env = os.environ.get("GRAPHOPT_DATA_DIR")
    if env:
        out.append(Path(env).expanduser() / CIFAR10_FILE)
    root = _project_root()
    if root is not None:
        out.append(root.parent / "shared" / "data" / CIFAR10_FILE)
    out.append(Path.cwd().parent / "shared" / "data" / CIFAR10_FILE)
    seen: set[Path] = set()
    uniq = []
    for p in out:
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


def find_cifar10(allow_demo: bool = True) -> Path:
    """Path of the CIFAR-10 file to use.

    Order: ``$GRAPHOPT_DATA_DIR/cifar10_jpeg.npz``, ``<project root>/../shared/data/cifar10_jpeg.npz``,
    ``$PWD/../shared/data/cifar10_jpeg.npz``, then (if ``allow_demo``) the bundled demo subset
    ``graphopt/data/cifar10_demo.npz``.
    """
    for p in cifar10_candidates():
        if p.is_file():
            return p
    demo = bundled_data_dir() / DEMO_FILE
    if allow_demo and demo.is_file():
        return demo
    tried = ", ".join(str(p) for p in cifar10_candidates())
    raise DataError(
        f"CIFAR-10 not found (tried {tried}"
        + ("" if allow_demo else "; demo subset not allowed")
        + f"). Put {CIFAR10_FILE} in a folder and set GRAPHOPT_DATA_DIR to it."
    )


def cache_dir() -> Path:
    """``$GRAPHOPT_CACHE_DIR`` or ``~/.cache/graphopt``."""
    env = os.environ.get("GRAPHOPT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graphopt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def decode_jpeg_images(
    blob: np.ndarray, offsets: np.ndarray, indices: Sequence[int] | np.ndarray | None = None, threads: int = 2
) -> np.ndarray:
    """Decode concatenated JPEGs (``blob[offsets[i]:offsets[i+1]]``) into an (N, H, W, 3) uint8 array.

    Pillow releases the GIL while decoding, so a couple of threads give a modest speed-up.
    """
    from PIL import Image

    idx = np.arange(len(offsets) - 1) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        return np.zeros((0, 0, 0, 3), np.uint8)

    def one(i: int) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))

    first = one(int(idx[0]))
    out = np.empty((len(idx), *first.shape), np.uint8)
    out[0] = first

    def run(chunk: np.ndarray) -> None:
        for k in chunk:
            img = one(int(idx[k]))
            if img.shape != first.shape:
                raise DataError(f"JPEG #{int(idx[k])} has shape {img.shape}, expected {first.shape}")
            out[k] = img

    chunks = np.array_split(np.arange(1, len(idx)), max(1, threads))
    if threads <= 1:
        run(chunks[0])
    else:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(run, chunks))
    return out


_REQUIRED_JPEG_KEYS = ("classes", "train_jpeg", "train_offsets", "train_labels", "test_jpeg", "test_offsets",
                       "test_labels")
_REQUIRED_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
_memo_lock = threading.Lock()
_memo: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a cache is as readable as any other file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_cifar10_arrays(path: str | os.PathLike | None = None, *, use_cache: bool = True) -> dict[str, np.ndarray]:
    """Decoded CIFAR-10 as ``x_train, y_train, x_test, y_test`` (NHWC uint8 / uint8) plus ``classes``.

    Accepts the shared JPEG file (decoded once, then cached under :func:`cache_dir` keyed by the file's
    sha256 and written atomically) or an already-decoded array file like the bundled demo subset.
    """
    src = Path(path) if path is not None else find_cifar10()
    if not src.is_file():
        raise DataError(f"CIFAR-10 file {src} does not exist; set GRAPHOPT_DATA_DIR or pass an existing path")
    st = src.stat()
    memo_key = (str(src.resolve()), st.st_size, st.st_mtime_ns)
    with _memo_lock:
        if memo_key in _memo:
            return _memo[memo_key]
    try:
        z = np.load(src, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any load failure is a data problem
        raise DataError(f"cannot read {src} as .npz ({e}); re-copy the file") from e
    with z:
        keys = set(z.files)
        if all(k in keys for k in _REQUIRED_ARRAY_KEYS):
            arrays = {k: z[k] for k in _REQUIRED_ARRAY_KEYS}
            arrays["classes"] = z["classes"] if "classes" in keys else np.array([str(i) for i in range(10)])
        elif all(k in keys for k in _REQUIRED_JPEG_KEYS):
            arrays = _decode_cached(src, z, use_cache)
        else:
            raise DataError(
                f"{src} is neither the CIFAR-10 JPEG format (keys {', '.join(_REQUIRED_JPEG_KEYS)}) nor the "
                f"decoded format (keys {', '.join(_REQUIRED_ARRAY_KEYS)}); it has {sorted(keys)}"
            )
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8 or len(x) != len(y):
            raise DataError(f"{src}: x_{split} must be (N, H, W, 3) uint8 matching y_{split}; got {x.shape}")
    with _memo_lock:
        _memo.clear()  # keep at most one decoded copy (~180 MB) per process
        _memo[memo_key] = arrays
    return arrays


def _decode_cached(src: Path, z: Any, use_cache: bool) -> dict[str, np.ndarray]:
    digest = _sha256(src)
    cpath = cache_dir() / f"cifar10-{digest[:16]}.npz"
    if use_cache and cpath.is_file():
        try:
            with np.load(cpath, allow_pickle=False) as c:
                return {k: c[k] for k in (*_REQUIRED_ARRAY_KEYS, "classes")}
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
            pass
    arrays: dict[str, np.ndarray] = {"classes": z["classes"]}
    for split in ("train", "test"):
        arrays[f"x_{split}"] = decode_jpeg_images(z[f"{split}_jpeg"], z[f"{split}_offsets"])
        arrays[f"y_{split}"] = z[f"{split}_labels"].astype(np.uint8)
    if use_cache:
        try:
            _atomic_savez(cpath, **arrays)
        except OSError as e:
            warnings.warn(f"could not write CIFAR-10 cache {cpath}: {e}; decoding again next time", stacklevel=3)
    return arrays


# ----------------------------------------------------------------------------------------------------------
# User data
# ----------------------------------------------------------------------------------------------------------


def load_image_folder(
    path: str | os.PathLike, image_size: int | tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read an ImageFolder tree (``root/<class>/<image>``) into (N, H, W, 3) uint8, labels and class names.

    Classes are the sorted sub-folder names that contain at least one image. Images of different sizes
    need ``image_size`` (they are then resized with Pillow's bilinear filter).
    """
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    classes = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and any(f.suffix.lower() in _IMAGE_EXTS for f in d.iterdir() if f.is_file())
    )
    if not classes:
        raise DataError(
            f"{root} has no class sub-folders with images ({', '.join(sorted(_IMAGE_EXTS))}); expected "
            "root/<class name>/<image files>"
        )
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    xs: list[np.ndarray] = []
    ys: list[int] = []
    first_shape: tuple[int, ...] | None = None
    for label, cls in enumerate(classes):
        for f in sorted(p for p in (root / cls).iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTS):
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if size is not None:
                        im = im.resize((size[1], size[0]), Image.BILINEAR)
                    arr = np.asarray(im)
            except Exception as e:  # noqa: BLE001
                raise DataError(f"cannot read image {f}: {e}; remove or fix the file") from e
            if first_shape is None:
                first_shape = arr.shape
            elif arr.shape != first_shape:
                raise DataError(
                    f"image {f} is {arr.shape[1]}x{arr.shape[0]} but earlier images are "
                    f"{first_shape[1]}x{first_shape[0]}; pass image_size=... to resize all images"
                )
            xs.append(arr)
            ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64), classes


def load_npz_arrays(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a user ``.npz``: ``x`` + ``y`` (+ optional ``x_test``/``y_test``, ``classes``).

    ``x`` is (N, H, W, C) uint8 or (N, C, H, W) float; ``y`` is (N,) integer labels (classification) or
    (N, H, W) integer masks (segmentation). Returns NHWC images and int64 labels plus the inferred task.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read {p} as .npz without pickle ({e}); save it with numpy.savez") from e
    with z:
        files = set(z.files)
        if not {"x", "y"} <= files:
            raise DataError(f"{p} must contain arrays 'x' and 'y' (optionally 'x_test', 'y_test'); has {sorted(files)}")
        if ("x_test" in files) != ("y_test" in files):
            raise DataError(f"{p}: 'x_test' and 'y_test' must be given together")
        out: dict[str, Any] = {}
        for xs, ys in (("x", "y"), ("x_test", "y_test")):
            if xs not in files:
                continue
            x, y = _check_xy(p, xs, ys, z[xs], z[ys])
            out[xs], out[ys] = x, y
        classes = [str(c) for c in z["classes"]] if "classes" in files else None
    if "x_test" in out and out["x_test"].shape[1:] != out["x"].shape[1:]:
        raise DataError(f"{p}: x_test samples are {out['x_test'].shape[1:]} but x samples are {out['x'].shape[1:]}")
    task: Task = "segmentation" if out["y"].ndim == 3 else "classification"
    max_label = max(int(out[k].max()) for k in ("y", "y_test") if k in out and out[k].size)
    num_classes = len(classes) if classes is not None else max_label + 1
    for k in ("y", "y_test"):
        if k in out and out[k].size and int(out[k].max()) >= num_classes:
            raise DataError(
                f"{p}: '{k}' has label {int(out[k].max())} but 'classes' lists only {num_classes} classes; "
                "labels must be 0..num_classes-1"
            )
    out.update(task=task, num_classes=num_classes, classes=classes or [str(i) for i in range(num_classes)])
    return out


def _check_xy(p: Path, xs: str, ys: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 4:
        raise DataError(f"{p}: '{xs}' must be 4-D, (N, H, W, C) uint8 or (N, C, H, W) float; got shape {x.shape}")
    if x.dtype == np.uint8:
        if x.shape[-1] not in (1, 3, 4):
            raise DataError(f"{p}: uint8 '{xs}' must be (N, H, W, C) with C in 1/3/4; got shape {x.shape}")
    elif np.issubdtype(x.dtype, np.floating):
        if x.shape[1] not in (1, 3, 4):
            raise DataError(f"{p}: float '{xs}' must be (N, C, H, W) with C in 1/3/4; got shape {x.shape}")
        if not np.isfinite(x).all():
            raise DataError(f"{p}: '{xs}' contains NaN or inf")
        x = np.ascontiguousarray(x.astype(np.float32).transpose(0, 2, 3, 1))
    else:
        raise DataError(f"{p}: '{xs}' must be uint8 (N, H, W, C) or float (N, C, H, W); got dtype {x.dtype}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{p}: '{ys}' must hold integer labels; got dtype {y.dtype}")
    if len(y) != len(x):
        raise DataError(f"{p}: '{xs}' has {len(x)} samples but '{ys}' has {len(y)}")
    if y.ndim not in (1, 3) or (y.ndim == 3 and y.shape[1:] != x.shape[1:3]):
        raise DataError(
            f"{p}: '{ys}' must be (N,) class labels or (N, H, W) masks matching the images "
            f"({x.shape[1]}x{x.shape[2]}); got shape {y.shape}"
        )
    if y.size and int(y.min()) < 0:
        raise DataError(f"{p}: '{ys}' has negative label {int(y.min())}; labels must be 0..num_classes-1")
    return x, y.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------


def _balanced_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices, round-robin over classes in shuffled order (as balanced as the data allows)."""
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = np.argsort(np.concatenate([np.arange(len(ix)) for ix in per_class]), kind="stable")
    flat = np.concatenate(per_class)[order]
    return np.sort(flat[:n])


def _stratified_split(labels: np.ndarray, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle, then carve ``frac`` of each class (classification) or of all samples; returns (rest, carved)."""
    if frac <= 0:
        return rng.permutation(len(labels)), np.zeros(0, np.int64)
    if labels.ndim == 1:
        carved, rest = [], []
        for c in np.unique(labels):
            ix = rng.permutation(np.flatnonzero(labels == c))
            k = int(round(frac * len(ix)))
            carved.append(ix[:k])
            rest.append(ix[k:])
        return rng.permutation(np.concatenate(rest)), rng.permutation(np.concatenate(carved))
    perm = rng.permutation(len(labels))
    k = int(round(frac * len(labels)))
    return perm[k:], perm[:k]


def heldout_indices(labels: np.ndarray, val_fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """Indices (into ``labels``' order) of the validation split that :func:`load_dataset` carves from a training
    set with a separate test set (e.g. ``cifar10``) at this ``val_fraction`` and ``seed``.

    Why: a reference model trained on the other 90% has never seen these images, so data drawn from them (the
    bundled demo subset) gives a trained model's candidates an honest validation score."""
    return np.sort(_stratified_split(labels, val_fraction, np.random.default_rng(seed))[1])


def _image_info(name: str, task: Task, x: np.ndarray, num_classes: int, classes: Sequence[str], source: str,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None, **kw: Any) -> DatasetInfo:
    if mean is None:
        if x.dtype == np.uint8:
            xf = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
            mean, std = tuple(xf.mean(0).round(4)), tuple(np.maximum(xf.std(0), 1e-3).round(4))
        else:
            mean, std = (0.0,) * x.shape[-1], (1.0,) * x.shape[-1]
    return DatasetInfo(
        name=name, task=task, num_classes=int(num_classes), input_shape=(x.shape[3], x.shape[1], x.shape[2]),
        classes=tuple(str(c) for c in classes), mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std), source=source, **kw,
    )


def _to_splits(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray | None, y_test: np.ndarray | None, info: DatasetInfo, *,
    val_fraction: float, test_fraction: float, seed: int,
) -> Splits:
    rng = np.random.default_rng(seed)
    if x_test is None or y_test is None:
        rest, te = _stratified_split(y, test_fraction, rng)
        x_test, y_test = x[te], y[te]
        x, y = x[rest], y[rest]
    tr, va = _stratified_split(y, val_fraction, rng)

    def mk(xa: np.ndarray, ya: np.ndarray) -> ArrayDataset:
        return ArrayDataset(torch.from_numpy(np.ascontiguousarray(xa)),
                            torch.from_numpy(np.ascontiguousarray(ya).astype(np.int64)), info)

    return Splits(mk(x[tr], y[tr]), mk(x[va], y[va]), mk(x_test, y_test), info)


# ----------------------------------------------------------------------------------------------------------
# Synthetic segmentation: cifar_paste
# ----------------------------------------------------------------------------------------------------------


def cifar_paste(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    *,
    canvas: int = 64,
    objects: tuple[int, int] = (1, 2),
    size: tuple[int, int] = (16, 32),
    mask_shape: Literal["ellipse", "rect"] = "ellipse",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """*Synthetic* segmentation samples: CIFAR objects pasted onto other CIFAR images.

    Each sample is a random CIFAR image upscaled (bilinear) to ``canvas`` x ``canvas`` as background, with
    ``objects[0]..objects[1]`` other CIFAR images resized to a random square side in ``size`` pasted at random
    positions (later objects occlude earlier ones). CIFAR has no masks, so the object region is *defined* as
    the ellipse inscribed in the pasted square (``mask_shape="ellipse"``, default: CIFAR objects are mostly
    centred, so the ellipse drops corners that are usually background) or the whole square (``"rect"``).
    Only pixels inside the mask are pasted, so image and mask always agree. The mask holds ``class + 1``
    inside objects and 0 for background. Deterministic under ``seed``.

    Returns (n, canvas, canvas, 3) uint8 images and (n, canvas, canvas) int64 masks.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) < 2:
        raise DataError(f"cifar_paste needs (N >= 2, H, W, 3) source images; got {images.shape}")
    lo, hi = size
    if not (1 <= lo <= hi <= canvas):
        raise DataError(f"cifar_paste: size range {size} must satisfy 1 <= min <= max <= canvas ({canvas})")
    rng = np.random.default_rng(seed)
    src = torch.from_numpy(images).permute(0, 3, 1, 2)
    bg_idx = rng.integers(0, len(images), n)
    bg = F.interpolate(src[torch.from_numpy(bg_idx)].float(), size=(canvas, canvas), mode="bilinear",
                       align_corners=False)
    out = bg.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    masks = np.zeros((n, canvas, canvas), np.int64)
    k_obj = rng.integers(objects[0], objects[1] + 1, n)
    shape_masks: dict[int, np.ndarray] = {}
    for i in range(n):
        for _ in range(int(k_obj[i])):
            j = int(rng.integers(0, len(images) - 1))
            j += j >= bg_idx[i]  # never the background image itself
            s = int(rng.integers(lo, hi + 1))
            top, left = (int(v) for v in rng.integers(0, canvas - s + 1, 2))
            obj = F.interpolate(src[j : j + 1].float(), size=(s, s), mode="bilinear", align_corners=False,
                                antialias=s < images.shape[1])
            obj_np = obj[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            if s not in shape_masks:
                if mask_shape == "ellipse":
                    c = (np.arange(s) + 0.5 - s / 2) / (s / 2)
                    shape_masks[s] = (c[:, None] ** 2 + c[None, :] ** 2) <= 1.0
                elif mask_shape == "rect":
                    shape_masks[s] = np.ones((s, s), bool)
                else:
                    raise DataError(f"cifar_paste: mask_shape must be 'ellipse' or 'rect', got {mask_shape!r}")
            m = shape_masks[s]
            region = out[i, top : top + s, left : left + s]
            region[m] = obj_np[m]
            masks[i, top : top + s, left : left + s][m] = int(labels[j]) + 1
    return out, masks


# ----------------------------------------------------------------------------------------------------------
# Synthetic token tasks
# ----------------------------------------------------------------------------------------------------------


def associative_recall(
    n: int, *, num_pairs: int = 8, num_queries: int = 4, vocab_size: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """*Synthetic* multi-query associative recall (as in Zoology/MQAR).

    Sequence = ``k1 v1 k2 v2 ... kP vP q1 ... qQ``: P key-value pairs with distinct keys, then Q distinct
    keys from those pairs. The target at each query position is that key's value; every other position
    holds ``IGNORE_INDEX``. Token 0 is reserved (padding, never emitted); keys come from ``1..K`` and values
    from ``K+1..vocab_size-1`` with ``K = (vocab_size - 1) // 2``. Length ``2P + Q``. Returns int64 inputs and
    targets of shape (n, 2P + Q).
    """
    n_keys = (vocab_size - 1) // 2
    n_vals = vocab_size - 1 - n_keys
    if num_pairs > n_keys or num_queries > num_pairs or n_vals < 1 or num_pairs < 1:
        raise DataError(
            f"associative_recall: need 1 <= num_queries ({num_queries}) <= num_pairs ({num_pairs}) <= "
            f"(vocab_size-1)//2 ({n_keys}); increase vocab_size or reduce num_pairs"
        )
    rng = np.random.default_rng(seed)
    keys = 1 + np.argsort(rng.random((n, n_keys)), axis=1)[:, :num_pairs]
    vals = 1 + n_keys + rng.integers(0, n_vals, (n, num_pairs))
    q = np.argsort(rng.random((n, num_pairs)), axis=1)[:, :num_queries]
    L = 2 * num_pairs + num_queries
    x = np.zeros((n, L), np.int64)
    x[:, 0 : 2 * num_pairs : 2] = keys
    x[:, 1 : 2 * num_pairs : 2] = vals
    x[:, 2 * num_pairs :] = np.take_along_axis(keys, q, 1)
    y = np.full((n, L), IGNORE_INDEX, np.int64)
    y[:, 2 * num_pairs :] = np.take_along_axis(vals, q, 1)
    return torch.from_numpy(x), torch.from_numpy(y)


def selective_copying(
    n: int, *, region_len: int = 64, num_tokens: int = 8, vocab_size: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """*Synthetic* selective copying (Mamba paper, Sec. 3.1).

    A region of ``region_len`` noise tokens (0) holds ``num_tokens`` data tokens (``2..vocab_size-1``) at
    random sorted positions; then ``num_tokens`` marker tokens (1) follow. The target at the i-th marker is
    the i-th data token in order; every other position is ``IGNORE_INDEX``. Length ``region_len + num_tokens``.
    """
    if vocab_size < 3 or not (1 <= num_tokens <= region_len):
        raise DataError(
            f"selective_copying: need vocab_size >= 3 (got {vocab_size}) and 1 <= num_tokens ({num_tokens}) "
            f"<= region_len ({region_len})"
        )
    rng = np.random.default_rng(seed)
    pos = np.sort(np.argsort(rng.random((n, region_len)), axis=1)[:, :num_tokens], axis=1)
    data = rng.integers(2, vocab_size, (n, num_tokens))
    L = region_len + num_tokens
    x = np.zeros((n, L), np.int64)
    np.put_along_axis(x, pos, data, 1)
    x[:, region_len:] = 1
    y = np.full((n, L), IGNORE_INDEX, np.int64)
    y[:, region_len:] = data
    return torch.from_numpy(x), torch.from_numpy(y)


_SEQ_TASKS = {
    "assoc_recall": associative_recall, "associative_recall": associative_recall,
    "selective_copy": selective_copying, "selective_copying": selective_copying,
}


# ----------------------------------------------------------------------------------------------------------
# load_dataset
# ----------------------------------------------------------------------------------------------------------


@overload
def load_dataset(name_or_path: str | os.PathLike, split: Literal["all"] = "all", **kwargs: Any) -> Splits: ...
@overload
def load_dataset(
    name_or_path: str | os.PathLike, split: Literal["train", "val", "test"], **kwargs: Any
) -> ArrayDataset: ...


def load_dataset(
    name_or_path: str | os.PathLike,
    split: Literal["all", "train", "val", "test"] = "all",
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    **task_kwargs: Any,
) -> Splits | ArrayDataset:
    """Load a named dataset or user data and split it reproducibly.

    * ``"cifar10"`` / ``"cifar10-demo"``: the 50k train set is shuffled (it is sorted by class) and
      ``val_fraction`` of each class becomes ``val``; ``test`` is the official test set.
    * ``"cifar_paste"``: synthetic segmentation (:func:`cifar_paste`) built from CIFAR-10 train images (train,
      val) and test images (test); sizes via ``n_train`` (2000), ``n_val`` (200), ``n_test`` (500), other
      keywords go to :func:`cifar_paste`.
    * ``"assoc_recall"`` / ``"selective_copy"``: synthetic token tasks; ``n_train`` (2000), ``n_val`` (200),
      ``n_test`` (500), other keywords go to the generator.
    * a directory: ImageFolder (``root/<class>/*.png``) or ``root/{train,test}/<class>/...``; an ``.npz``:
      see :func:`load_npz_arrays`. Without a test split, ``test_fraction`` (per class) becomes ``test``.

    ``train_size``/``val_size``/``test_size`` cap each split with a seeded, class-balanced subset (quick runs).
    Returns :class:`Splits` for ``split="all"``, otherwise that split's :class:`ArrayDataset`.
    """
    if split not in ("all", "train", "val", "test"):
        raise DataError(f"unknown split {split!r}; use 'all', 'train', 'val' or 'test'")
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise DataError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1)")
    name = str(name_or_path)
    key = name.lower()
    if key in ("cifar10", "cifar-10", "cifar10-demo", "cifar10_demo"):
        splits = _load_cifar10(demo=key.endswith("demo"), val_fraction=val_fraction, seed=seed)
    elif key in ("cifar_paste", "cifar-paste"):
        splits = _load_cifar_paste(seed=seed, **task_kwargs)
    elif key in _SEQ_TASKS:
        splits = _load_seq_task(key, seed=seed, **task_kwargs)
    else:
        if task_kwargs:
            raise DataError(f"unexpected options {sorted(task_kwargs)} for data path {name}")
        splits = _load_user(Path(name).expanduser(), val_fraction=val_fraction, test_fraction=test_fraction,
                            seed=seed, image_size=image_size)
    caps = {"train": train_size, "val": val_size, "test": test_size}
    for i, (s, cap) in enumerate(caps.items()):
        if cap is not None:
            setattr(splits, s, splits[s].subset(int(cap), seed=seed + 7919 * (i + 1)))
    return splits if split == "all" else splits[split]


def _load_cifar10(*, demo: bool, val_fraction: float, seed: int) -> Splits:
    if demo:
        path = bundled_data_dir() / DEMO_FILE
        if not path.is_file():
            raise DataError(f"bundled demo subset {path} is missing; regenerate it with "
                            "python graphopt/data/make_demo_subset.py")
    else:
        path = find_cifar10()
        if path.name == DEMO_FILE:
            warnings.warn(
                f"full CIFAR-10 ({CIFAR10_FILE}) not found; using the bundled demo subset {path} "
                "(2,000 train / 500 test images). Set GRAPHOPT_DATA_DIR to the folder with the full file.",
                stacklevel=3,
            )
    a = load_cifar10_arrays(path)
    is_demo = path.name == DEMO_FILE
    info = _image_info("cifar10-demo" if is_demo else "cifar10", "classification", a["x_train"], 10, a["classes"],
                       str(path), CIFAR10_MEAN, CIFAR10_STD,
                       notes="bundled balanced demo subset" if is_demo else "")
    return _to_splits(a["x_train"], a["y_train"], a["x_test"], a["y_test"], info,
                      val_fraction=val_fraction, test_fraction=0.0, seed=seed)


def _load_cifar_paste(*, seed: int, n_train: int = 2000, n_val: int = 200, n_test: int = 500,
                      source: str | os.PathLike | None = None, **kw: Any) -> Splits:
    a = load_cifar10_arrays(source)
    ss = np.random.default_rng(seed).integers(0, 2**31, 3)
    canvas = int(kw.get("canvas", 64))
    classes = ("background", *(str(c) for c in a["classes"]))
    info = DatasetInfo(
        name="cifar_paste", task="segmentation", num_classes=11, input_shape=(3, canvas, canvas),
        classes=classes, mean=CIFAR10_MEAN, std=CIFAR10_STD, source=f"synthetic from {source or find_cifar10()}",
        synthetic=True,
        notes=f"synthetic: CIFAR objects pasted on CIFAR backgrounds, mask={kw.get('mask_shape', 'ellipse')}",
    )

    def mk(x: np.ndarray, y: np.ndarray, n: int, s: int) -> ArrayDataset:
        xi, yi = cifar_paste(x, y, n, seed=int(s), **kw)
        return ArrayDataset(torch.from_numpy(xi), torch.from_numpy(yi), info)

    return Splits(mk(a["x_train"], a["y_train"], n_train, ss[0]), mk(a["x_train"], a["y_train"], n_val, ss[1]),
                  mk(a["x_test"], a["y_test"], n_test, ss[2]), info)


def _load_seq_task(key: str, *, seed: int, n_train: int = 2000, n_val: int = 200, n_test: int = 500,
                   **kw: Any) -> Splits:
    gen = _SEQ_TASKS[key]
    ss = np.random.default_rng(seed).integers(0, 2**31, 3)
    parts = [gen(n, seed=int(s), **kw) for n, s in zip((n_train, n_val, n_test), ss, strict=True)]
    vocab = int(kw.get("vocab_size", 64 if gen is associative_recall else 16))
    info = DatasetInfo(
        name=gen.__name__, task="sequence", num_classes=vocab, input_shape=(parts[0][0].shape[1],),
        vocab_size=vocab, source="synthetic", synthetic=True, notes=f"synthetic token task {gen.__name__} {kw}",
    )
    tr, va, te = (ArrayDataset(x, y, info) for x, y in parts)
    return Splits(tr, va, te, info)


def _load_user(path: Path, *, val_fraction: float, test_fraction: float, seed: int,
               image_size: int | tuple[int, int] | None) -> Splits:
    if not path.exists():
        raise DataError(
            f"data path {path} does not exist; pass an ImageFolder directory, an .npz with 'x'/'y', or a "
            "named dataset (cifar10, cifar10-demo, cifar_paste, assoc_recall, selective_copy)"
        )
    if path.is_dir():
        tr_dir, te_dir = path / "train", next((path / d for d in ("test", "val") if (path / d).is_dir()), None)
        if tr_dir.is_dir() and te_dir is not None:
            x, y, classes = load_image_folder(tr_dir, image_size)
            xt, yt, classes_t = load_image_folder(te_dir, image_size)
            if classes_t != classes:
                raise DataError(f"{te_dir} has classes {classes_t} but {tr_dir} has {classes}; they must match")
            if xt.shape[1:] != x.shape[1:]:
                raise DataError(f"{te_dir} images are {xt.shape[1:3]} but {tr_dir} images are {x.shape[1:3]}; "
                                "pass image_size=...")
        else:
            x, y, classes = load_image_folder(path, image_size)
            xt = yt = None
        info = _image_info(path.name, "classification", x, len(classes), classes, str(path))
        return _to_splits(x, y, xt, yt, info, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if path.suffix.lower() != ".npz":
        raise DataError(f"data file {path} is not an .npz or a directory; see graphopt.eval.data.load_dataset")
    a = load_npz_arrays(path)
    info = _image_info(path.stem, a["task"], a["x"], a["num_classes"], a["classes"], str(path))
    return _to_splits(a["x"], a["y"], a.get("x_test"), a.get("y_test"), info,
                      val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


# ----------------------------------------------------------------------------------------------------------
# Batching and augmentation
# ----------------------------------------------------------------------------------------------------------


def _crop_flip(x: torch.Tensor, y: torch.Tensor | None, pad: int, g: torch.Generator, ignore_index: int
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random ``pad``-px padded crop + horizontal flip on an NHWC batch (and matching (N, H, W) masks)."""
    B, H, W = x.shape[:3]
    flip = torch.rand(B, generator=g) < 0.5
    if pad > 0:
        oy = torch.randint(0, 2 * pad + 1, (B,), generator=g)
        ox = torch.randint(0, 2 * pad + 1, (B,), generator=g)
        rows = (oy[:, None] + torch.arange(H))[:, :, None]
        cols = (ox[:, None] + torch.arange(W))[:, None, :]
        b = torch.arange(B)[:, None, None]
        x = F.pad(x, (0, 0, pad, pad, pad, pad))[b, rows, cols]
        if y is not None:
            y = F.pad(y, (pad, pad, pad, pad), value=ignore_index)[b, rows, cols]
    x = torch.where(flip[:, None, None, None], x.flip(2), x)
    if y is not None:
        y = torch.where(flip[:, None, None], y.flip(2), y)
    return x, y


def prepare_batch(
    x: torch.Tensor, y: torch.Tensor, info: DatasetInfo, *, augment: bool = False,
    generator: torch.Generator | None = None, channels_last: bool = False, pad: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw stored samples -> model inputs: normalized float NCHW images (or int64 tokens) and int64 targets.

    With ``augment`` (image tasks): 4-px padded random crop + horizontal flip, the same transform applied to
    segmentation masks (padding there is ``ignore_index``).
    """
    if info.task == "sequence":
        return x, y
    if augment:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        x, ym = _crop_flip(x, y if info.task == "segmentation" else None, pad, g, info.ignore_index)
        if ym is not None:
            y = ym
    xf = x.permute(0, 3, 1, 2).float()
    if x.dtype == torch.uint8:
        xf = xf.div_(255.0)
    if info.mean is not None and info.std is not None:
        mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1)
        xf = xf.sub_(mean).div_(std)
    xf = xf.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return xf, y


@dataclass
class BatchLoader:
    """Fast in-memory batch iterator, deterministic under ``seed``.

    Epoch ``e`` (the number of completed ``__iter__`` calls, or set via :meth:`set_epoch`) draws its shuffle
    order and augmentation from a generator seeded by ``(seed, e)``, so a run can be replayed or resumed at
    any epoch.
    """

    data: ArrayDataset
    batch_size: int = 128
    shuffle: bool = False
    augment: bool = False
    seed: int = 0
    drop_last: bool = False
    channels_last: bool = False
    epoch: int = field(default=0)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        self.epoch += 1
        g = torch.Generator().manual_seed(seed)
        n = len(self.data)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield prepare_batch(self.data.x[idx], self.data.y[idx], self.data.info, augment=self.augment,
                                generator=g, channels_last=self.channels_last)


def with_info(ds: ArrayDataset, **changes: Any) -> ArrayDataset:
    """Copy of ``ds`` with some :class:`DatasetInfo` fields replaced."""
    return ArrayDataset(ds.x, ds.y, replace(ds.info, **changes))
