"""graphopt.eval.data: CIFAR lookup/decoding/cache, user data validation, splits, augmentation, synthetic sets."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import graphopt.eval.data as D
from graphopt.eval.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IGNORE_INDEX,
    ArrayDataset,
    BatchLoader,
    DataError,
    DatasetInfo,
    associative_recall,
    cifar_paste,
    load_dataset,
    prepare_batch,
    selective_copying,
)

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "cifar10_jpeg.npz"
SHARED_SHA256 = "4d48ff9b87a0a3bdc6f450a3ce3bf8c71700314c49e8fe96d99acb78a8956dae"
DEMO = ROOT / "graphopt" / "data" / "cifar10_demo.npz"
needs_shared = pytest.mark.skipif(not SHARED.is_file(), reason=f"shared CIFAR-10 file {SHARED} not present")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the user's cache or data dir; the in-process memo starts empty."""
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GRAPHOPT_DATA_DIR", raising=False)
    D._memo.clear()
    yield
    D._memo.clear()


def _smooth_images(n: int, seed: int, size: int = 32) -> np.ndarray:
    """Smooth random RGB images (JPEG-friendly, distinct per sample)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    t = torch.from_numpy(low).permute(0, 3, 1, 2)
    up = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return up.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _write_jpeg_npz(path: Path, n_train: int = 40, n_test: int = 20, classes: int = 4) -> dict[str, np.ndarray]:
    """A tiny file in the shared CIFAR-10 format (labels sorted by class, like the real one)."""
    out: dict[str, np.ndarray] = {"classes": np.array([f"c{i}" for i in range(classes)])}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        imgs = _smooth_images(n, seed)
        blobs = []
        for im in imgs:
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="JPEG", quality=95)
            blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        out[f"{split}_jpeg"] = np.concatenate(blobs)
        out[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        out[f"{split}_labels"] = np.repeat(np.arange(classes), n // classes).astype(np.uint8)
    np.savez(path, **out)
    return out


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10 lookup, decoding, cache, demo subset
# ---------------------------------------------------------------------------------------------------------


def test_lookup_prefers_env_dir_then_falls_back_to_demo(tmp_path, monkeypatch):
    data_dir = tmp_path / "mydata"
    data_dir.mkdir()
    _write_jpeg_npz(data_dir / "cifar10_jpeg.npz")
    monkeypatch.setenv("GRAPHOPT_DATA_DIR", str(data_dir))
    assert D.find_cifar10() == data_dir / "cifar10_jpeg.npz"

    monkeypatch.delenv("GRAPHOPT_DATA_DIR")
    monkeypatch.setattr(D, "_project_root", lambda: tmp_path / "nowhere" / "proj")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert D.find_cifar10() == DEMO
    with pytest.raises(DataError, match="GRAPHOPT_DATA_DIR"):
        D.find_cifar10(allow_demo=False)
    # cwd/../shared/data is searched too
    (tmp_path / "a" / "shared" / "data").mkdir(parents=True)
    _write_jpeg_npz(tmp_path / "a" / "shared" / "data" / "cifar10_jpeg.npz")
    assert D.find_cifar10().resolve() == (tmp_path / "a" / "shared" / "data" / "cifar10_jpeg.npz").resolve()
    with pytest.warns(UserWarning, match="demo subset"):
        monkeypatch.chdir(tmp_path)
        load_dataset("cifar10", train_size=10, val_size=10, test_size=10)


def test_jpeg_decode_and_atomic_cache(tmp_path, monkeypatch):
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    raw = _write_jpeg_npz(data_dir / "cifar10_jpeg.npz")
    monkeypatch.setenv("GRAPHOPT_DATA_DIR", str(data_dir))
    arrays = D.load_cifar10_arrays()
    # pixels equal Pillow's decoding of each JPEG, labels copied
    o, j = raw["train_offsets"], raw["train_jpeg"]
    for i in (0, 17, 39):
        ref = np.asarray(Image.open(io.BytesIO(j[o[i] : o[i + 1]].tobytes())).convert("RGB"))
        np.testing.assert_array_equal(arrays["x_train"][i], ref)
    np.testing.assert_array_equal(arrays["y_test"], raw["test_labels"])
    assert arrays["x_test"].shape == (20, 32, 32, 3) and arrays["x_test"].dtype == np.uint8

    cache = tmp_path / "cache"
    digest = hashlib.sha256((data_dir / "cifar10_jpeg.npz").read_bytes()).hexdigest()
    files = sorted(p.name for p in cache.iterdir())
    assert files == [f"cifar10-{digest[:16]}.npz"]  # keyed by sha256, no temp file left behind

    # second load (fresh process state) comes from the cache: decoding is not called
    D._memo.clear()
    monkeypatch.setattr(D, "decode_jpeg_images", lambda *a, **k: pytest.fail("decoded again despite cache"))
    again = D.load_cifar10_arrays()
    np.testing.assert_array_equal(again["x_train"], arrays["x_train"])


def test_demo_subset_is_balanced_small_and_loadable():
    assert DEMO.is_file(), "bundled demo subset missing: run python graphopt/data/make_demo_subset.py"
    assert DEMO.stat().st_size <= 8 * 2**20
    with np.load(DEMO, allow_pickle=False) as z:
        assert sorted(z.files) == ["classes", "x_test", "x_train", "y_test", "y_train"]
        assert z["x_train"].shape == (2000, 32, 32, 3) and z["x_train"].dtype == np.uint8
        assert z["x_test"].shape == (500, 32, 32, 3)
        assert np.bincount(z["y_train"]).tolist() == [200] * 10
        assert np.bincount(z["y_test"]).tolist() == [50] * 10
    s = load_dataset("cifar10-demo", val_fraction=0.1)
    assert s.sizes() == {"train": 1800, "val": 200, "test": 500}
    assert s.info.num_classes == 10 and s.info.input_shape == (3, 32, 32) and s.info.classes[0] == "airplane"


@needs_shared
def test_shared_file_checksum_and_demo_reproducible(tmp_path):
    h = hashlib.sha256(SHARED.read_bytes()).hexdigest()
    assert h == SHARED_SHA256
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo_subset", ROOT / "graphopt/data/make_demo_subset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "demo.npz"
    mod.make_subset(SHARED, out, 200, 50, seed=0)
    with np.load(out) as a, np.load(DEMO) as b:
        for k in ("x_train", "y_train", "x_test", "y_test", "classes"):
            np.testing.assert_array_equal(a[k], b[k])


@needs_shared
def test_shared_file_resolves_and_decodes():
    assert D.find_cifar10().resolve() == SHARED.resolve()
    with np.load(SHARED) as z:
        imgs = D.decode_jpeg_images(z["test_jpeg"], z["test_offsets"], np.arange(0, 10000, 500))
        labels = z["test_labels"]
    assert imgs.shape == (20, 32, 32, 3)
    assert 60 < imgs.mean() < 190  # real photos, not blank
    assert np.all(np.diff(labels.astype(int)) >= 0)  # sorted by class: splits must shuffle


# ---------------------------------------------------------------------------------------------------------
# Splits and user data
# ---------------------------------------------------------------------------------------------------------


def _id_npz(path: Path, n: int = 200, classes: int = 5, with_test: bool = False) -> np.ndarray:
    """Images whose pixel (0, 0, 0..1) encodes the sample id, labels sorted by class."""
    x = np.zeros((n, 8, 8, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(n) % 256
    x[:, 0, 0, 1] = np.arange(n) // 256
    y = np.repeat(np.arange(classes), n // classes)
    arrays = {"x": x, "y": y}
    if with_test:
        arrays.update(x_test=x[:10], y_test=y[:10])
    np.savez(path, **arrays)
    return y


def _ids(ds: ArrayDataset) -> np.ndarray:
    return ds.x[:, 0, 0, 0].numpy().astype(int) + 256 * ds.x[:, 0, 0, 1].numpy().astype(int)


def test_splits_are_seeded_disjoint_stratified_and_shuffled(tmp_path):
    p = tmp_path / "ids.npz"
    y = _id_npz(p)
    s = load_dataset(p, val_fraction=0.2, test_fraction=0.1, seed=3)
    ids = [_ids(s.train), _ids(s.val), _ids(s.test)]
    assert sum(len(i) for i in ids) == 200 and len(set(np.concatenate(ids))) == 200  # a partition
    # per class: 40 -> 4 test (10%), then round(0.2 * 36) = 7 val
    assert len(ids[2]) == 20 and len(ids[1]) == 35
    assert np.bincount(s.val.y.numpy()).tolist() == [7] * 5
    np.testing.assert_array_equal(s.train.y.numpy(), y[ids[0]])  # labels follow their images
    assert np.any(np.diff(s.train.y.numpy()) < 0)  # shuffled, no longer sorted by class
    s2 = load_dataset(p, val_fraction=0.2, test_fraction=0.1, seed=3)
    np.testing.assert_array_equal(_ids(s2.train), ids[0])
    s3 = load_dataset(p, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert not np.array_equal(np.sort(_ids(s3.val)), np.sort(ids[1]))
    # explicit test split is used as is; caps give class-balanced subsets
    p2 = tmp_path / "ids_test.npz"
    _id_npz(p2, with_test=True)
    s4 = load_dataset(p2, train_size=50)
    assert len(s4.test) == 10 and len(s4.train) == 50
    assert np.bincount(s4.train.y.numpy()).tolist() == [10] * 5
    assert isinstance(load_dataset(p2, "val"), ArrayDataset)


def test_npz_float_nchw_equals_uint8_nhwc(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (30, 6, 6, 3)).astype(np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "u8.npz", x=x, y=y)
    np.savez(tmp_path / "f32.npz", x=x.transpose(0, 3, 1, 2).astype(np.float32), y=y)
    a = load_dataset(tmp_path / "u8.npz", val_fraction=0.0, seed=1)
    b = load_dataset(tmp_path / "f32.npz", val_fraction=0.0, seed=1)
    np.testing.assert_array_equal(a.train.x.numpy().astype(np.float32), b.train.x.numpy())
    assert b.info.mean == (0.0, 0.0, 0.0) and b.info.std == (1.0, 1.0, 1.0)  # float data used as given
    xf, _ = prepare_batch(b.train.x[:4], b.train.y[:4], b.info)
    np.testing.assert_array_equal(xf.numpy(), b.train.x[:4].permute(0, 3, 1, 2).numpy())
    assert a.info.num_classes == 3 and a.info.input_shape == (3, 6, 6)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(4, int)}, "must be 4-D"),
        ({"x": np.zeros((4, 3, 8, 8), np.uint8), "y": np.zeros(4, int)}, r"\(N, H, W, C\)"),
        ({"x": np.zeros((4, 8, 8, 3), np.float32), "y": np.zeros(4, int)}, r"\(N, C, H, W\)"),
        ({"x": np.zeros((4, 8, 8, 3), np.uint8), "y": np.zeros(5, int)}, "4 samples but 'y' has 5"),
        ({"x": np.zeros((4, 8, 8, 3), np.uint8), "y": np.array([0, 1, -1, 0])}, "negative label"),
        ({"x": np.zeros((4, 8, 8, 3), np.uint8), "y": np.array([0, 1, 2, 3]), "classes": np.array(["a", "b"])},
         "only 2 classes"),
        ({"x": np.zeros((4, 8, 8, 3), np.uint8), "y": np.zeros(4, np.float32)}, "integer labels"),
        ({"x": np.zeros((4, 8, 8, 3), np.uint8)}, "must contain arrays 'x' and 'y'"),
        ({"x": np.zeros((4, 8, 8, 3), np.uint8), "y": np.zeros((4, 7, 8), int)}, "masks matching"),
    ],
)
def test_npz_validation_errors_name_file_and_fix(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=match) as ei:
        load_dataset(p)
    assert str(p) in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist.*ImageFolder"):
        load_dataset(tmp_path / "nope.npz")
    (tmp_path / "file.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="not an .npz"):
        load_dataset(tmp_path / "file.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("cifar10-demo", "validation")


def test_npz_segmentation_masks(tmp_path):
    x = np.zeros((20, 8, 8, 3), np.uint8)
    y = np.zeros((20, 8, 8), np.int64)
    y[:, 2:5, 2:5] = 2
    np.savez(tmp_path / "seg.npz", x=x, y=y)
    s = load_dataset(tmp_path / "seg.npz", val_fraction=0.0)
    assert s.info.task == "segmentation" and s.info.num_classes == 3 and s.train.y.shape[1:] == (8, 8)


def _write_folder(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    out: dict[str, list[np.ndarray]] = {}
    for cls, shapes in sizes.items():
        (root / cls).mkdir(parents=True)
        out[cls] = []
        for i, (h, w) in enumerate(shapes):
            im = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
            Image.fromarray(im).save(root / cls / f"{i:03d}.png")
            out[cls].append(im)
    (root / "notes.txt").write_text("ignored")
    return out


def test_image_folder(tmp_path):
    imgs = _write_folder(tmp_path / "f", {"cat": [(10, 12)] * 6, "dog": [(10, 12)] * 4})
    x, y, classes = D.load_image_folder(tmp_path / "f")
    assert classes == ["cat", "dog"] and y.tolist() == [0] * 6 + [1] * 4
    np.testing.assert_array_equal(x[7], imgs["dog"][1])  # PNG is lossless
    s = load_dataset(tmp_path / "f", val_fraction=0.0, test_fraction=0.5)
    assert s.info.input_shape == (3, 10, 12) and s.info.classes == ("cat", "dog") and len(s.test) == 5

    _write_folder(tmp_path / "g", {"a": [(8, 8), (9, 8)], "b": [(8, 8)]})
    with pytest.raises(DataError, match="image_size"):
        D.load_image_folder(tmp_path / "g")
    x, _, _ = D.load_image_folder(tmp_path / "g", image_size=6)
    assert x.shape == (3, 6, 6, 3)

    _write_folder(tmp_path / "h" / "train", {"a": [(8, 8)] * 4, "b": [(8, 8)] * 4})
    _write_folder(tmp_path / "h" / "test", {"a": [(8, 8)] * 2, "b": [(8, 8)] * 2})
    s = load_dataset(tmp_path / "h", val_fraction=0.25)
    assert s.sizes() == {"train": 6, "val": 2, "test": 4}


# ---------------------------------------------------------------------------------------------------------
# Batches, augmentation, loader
# ---------------------------------------------------------------------------------------------------------


def _info(task: str = "classification", c: int = 3) -> DatasetInfo:
    return DatasetInfo("t", task, 10, (c, 8, 8), mean=CIFAR10_MEAN, std=CIFAR10_STD)


def test_normalization_and_channels_last():
    x = torch.randint(0, 256, (5, 8, 8, 3), dtype=torch.uint8)
    y = torch.arange(5)
    xf, yy = prepare_batch(x, y, _info())
    ref = (x.permute(0, 3, 1, 2).float() / 255 - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(xf, ref)
    assert xf.is_contiguous() and yy is y
    xc, _ = prepare_batch(x, y, _info(), channels_last=True)
    assert xc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xc, ref)


def test_crop_flip_is_a_padded_shift_or_its_mirror():
    x = torch.randint(1, 256, (16, 8, 8, 3), dtype=torch.uint8)  # no zeros: padding is recognisable
    g = torch.Generator().manual_seed(0)
    out, _ = D._crop_flip(x, None, 4, g, IGNORE_INDEX)
    padded = F.pad(x, (0, 0, 4, 4, 4, 4))
    flips = shifts = 0
    for i in range(16):
        crops = [(oy, ox, padded[i, oy : oy + 8, ox : ox + 8]) for oy in range(9) for ox in range(9)]
        matches = [(oy, ox, fl) for oy, ox, c in crops for fl in (0, 1)
                   if torch.equal(c.flip(1) if fl else c, out[i])]
        assert matches, f"image {i} is not a padded crop (+flip) of its input"
        flips += any(m[2] for m in matches)
        shifts += any((m[0], m[1]) != (4, 4) for m in matches)
    assert 0 < flips < 16 and shifts > 8  # both transforms actually happen


def test_segmentation_augmentation_moves_masks_with_images():
    x = torch.randint(1, 200, (8, 8, 8, 3), dtype=torch.uint8)
    mask = x[..., 0].long()  # mask is a function of the image: must stay aligned
    info = _info("segmentation")
    g = torch.Generator().manual_seed(1)
    _, y = prepare_batch(x, mask, replace_mean(info), augment=True, generator=g)
    g = torch.Generator().manual_seed(1)
    xa, _ = D._crop_flip(x, mask, 4, g, IGNORE_INDEX)
    valid = y != IGNORE_INDEX
    assert torch.equal(xa[..., 0].long()[valid], y[valid])
    assert torch.all(xa[..., 0][~valid] == 0)  # padded image area <-> ignored mask area
    assert (~valid).any()


def replace_mean(info: DatasetInfo) -> DatasetInfo:
    from dataclasses import replace

    return replace(info, mean=None, std=None)


def test_loader_deterministic_and_complete():
    ds = ArrayDataset(torch.randint(0, 256, (50, 8, 8, 3), dtype=torch.uint8), torch.arange(50), _info())
    a = list(BatchLoader(ds, 16, shuffle=True, augment=True, seed=5))
    b = list(BatchLoader(ds, 16, shuffle=True, augment=True, seed=5))
    assert len(a) == 4 and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))
    assert sorted(torch.cat([yb for _, yb in a]).tolist()) == list(range(50))
    loader = BatchLoader(ds, 16, shuffle=True, seed=5, drop_last=True)
    e0 = torch.cat([yb for _, yb in loader])
    e1 = torch.cat([yb for _, yb in loader])
    assert len(loader) == 3 and len(e0) == 48 and not torch.equal(e0, e1)  # new order each epoch
    loader.set_epoch(0)
    assert torch.equal(torch.cat([yb for _, yb in loader]), e0)  # replayable
    c = list(BatchLoader(ds, 16, shuffle=True, seed=6))
    assert not torch.equal(a[0][1], c[0][1])


# ---------------------------------------------------------------------------------------------------------
# Synthetic sets
# ---------------------------------------------------------------------------------------------------------


def test_cifar_paste_rect_objects_are_resized_sources():
    src = _smooth_images(12, 7)
    labels = np.arange(12) % 10
    x, m = cifar_paste(src, labels, 6, canvas=48, objects=(1, 1), size=(12, 20), mask_shape="rect", seed=3)
    assert x.shape == (6, 48, 48, 3) and m.shape == (6, 48, 48) and x.dtype == np.uint8
    t = torch.from_numpy(src).permute(0, 3, 1, 2).float()
    for i in range(6):
        ys, xs = np.nonzero(m[i])
        top, left, s = ys.min(), xs.min(), ys.max() - ys.min() + 1
        assert xs.max() - left + 1 == s and len(ys) == s * s and 12 <= s <= 20  # one square
        lab = np.unique(m[i][m[i] > 0])
        assert len(lab) == 1
        patch = torch.from_numpy(x[i, top : top + s, left : left + s])
        found = [j for j in range(12)
                 if torch.equal(F.interpolate(t[j : j + 1], size=(s, s), mode="bilinear", align_corners=False,
                                              antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
                                .permute(1, 2, 0), patch)]
        assert found and all(labels[j] + 1 == lab[0] for j in found)
    x2, m2 = cifar_paste(src, labels, 6, canvas=48, objects=(1, 1), size=(12, 20), mask_shape="rect", seed=3)
    assert np.array_equal(x, x2) and np.array_equal(m, m2)


def test_cifar_paste_ellipse_masks():
    src = _smooth_images(10, 8)
    x, m = cifar_paste(src, np.arange(10), 20, objects=(1, 2), seed=0)
    assert x.shape == (20, 64, 64, 3) and m.min() == 0 and m.max() <= 10
    single = cifar_paste(src, np.arange(10), 10, objects=(1, 1), size=(20, 20), seed=1)[1]
    area = (single > 0).sum((1, 2))
    c = (np.arange(20) + 0.5 - 10) / 10
    expected = int(((c[:, None] ** 2 + c[None, :] ** 2) <= 1).sum())
    assert np.all(area == expected) and expected < 400  # the inscribed ellipse, not the square
    s = load_dataset("cifar_paste", n_train=30, n_val=5, n_test=5, seed=2, source=DEMO)
    assert s.info.task == "segmentation" and s.info.num_classes == 11 and s.info.synthetic
    assert s.sizes() == {"train": 30, "val": 5, "test": 5}
    with pytest.raises(DataError, match="size range"):
        cifar_paste(src, np.arange(10), 2, canvas=16, size=(8, 20))


def test_associative_recall_targets_are_the_paired_values():
    x, y = associative_recall(50, num_pairs=6, num_queries=3, vocab_size=40, seed=0)
    assert x.shape == (50, 15) and x.dtype == torch.int64
    for i in range(50):
        keys, vals = x[i, 0:12:2].tolist(), x[i, 1:12:2].tolist()
        assert len(set(keys)) == 6 and max(keys) <= 19 and min(vals) >= 20 and max(vals) <= 39
        assert torch.all(y[i, :12] == IGNORE_INDEX)
        for pos in range(12, 15):
            assert y[i, pos].item() == vals[keys.index(x[i, pos].item())]
    x2, y2 = associative_recall(50, num_pairs=6, num_queries=3, vocab_size=40, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, associative_recall(50, num_pairs=6, num_queries=3, vocab_size=40, seed=1)[0])
    with pytest.raises(DataError, match="vocab_size"):
        associative_recall(2, num_pairs=30, vocab_size=20)


def test_selective_copying_targets_are_data_tokens_in_order():
    x, y = selective_copying(30, region_len=20, num_tokens=5, vocab_size=10, seed=0)
    assert x.shape == (30, 25)
    for i in range(30):
        data = [t for t in x[i, :20].tolist() if t != 0]
        assert len(data) == 5 and all(2 <= t < 10 for t in data)
        assert x[i, 20:].tolist() == [1] * 5
        assert y[i, 20:].tolist() == data and torch.all(y[i, :20] == IGNORE_INDEX)
    s = load_dataset("selective_copy", n_train=10, n_val=4, n_test=4, region_len=20, num_tokens=5, vocab_size=10)
    assert s.info.task == "sequence" and s.info.num_classes == 10 and s.info.input_shape == (25,)
    xb, yb = next(iter(BatchLoader(s.train, 4)))
    assert xb.dtype == torch.int64 and yb.shape == (4, 25)


def test_env_var_cache_dir_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert D.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("GRAPHOPT_CACHE_DIR")
    assert D.cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "graphopt"
