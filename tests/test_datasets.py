from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

import lth
from lth.data import vision
from lth.data.augment import crop_flip
from lth.data.formats import read_cifar, read_idx
from lth.data.sources import RemoteFile, Source

# ---- fixtures in the real on-disk formats -------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def mnist_files(n_train=120, n_test=30, seed=0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    return {name: gzip.compress(idx_bytes(a)) for name, a in arrays.items()}


def cifar_batch(n: int, seed: int, label_key=b"labels") -> bytes:
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"fixture", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             label_key: rng.integers(0, 10, n).tolist(), b"filenames": [b"x.png"] * n}
    return pickle.dumps(batch, protocol=2)


def cifar10_archive(per_batch=8) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for i, name in enumerate(names):
            raw = cifar_batch(per_batch, i)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


class Server:
    """A loopback HTTP server with Range support that can drop a response midway."""

    def __init__(self, files: dict[str, bytes], drop_first: set[str] = frozenset()):
        self.files, self.drop = dict(files), set(drop_first)
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                if name not in outer.files:
                    self.send_error(404)
                    return
                body = outer.files[name]
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if name in outer.drop:  # promise everything, send half, hang up
                    outer.drop.discard(name)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("LTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LTH_DATA", raising=False)
    return tmp_path


def serve_as(monkeypatch, key: str, files: dict[str, bytes], server: Server, *,
             digest="sha256", wrong: str | None = None) -> None:
    specs = tuple(RemoteFile(n, **{digest: "0" * 64 if n == wrong else
                                   hashlib.new(digest, b).hexdigest()})
                  for n, b in files.items())
    monkeypatch.setitem(vision.SOURCES, key, Source(key, specs, (server.url,)))


# ---- formats --------------------------------------------------------------------------


def test_idx_gz_and_raw_parse_to_the_same_array(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(a)))
    (tmp_path / "a").write_bytes(idx_bytes(a))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)
    assert np.array_equal(read_idx(tmp_path / "a"), a)


@pytest.mark.parametrize("mangle, match", [
    (lambda b: b[:-5], "truncated or corrupt"),
    (lambda b: b"\x01\x02" + b[2:], "not an IDX file"),
    (lambda b: b[:6], "truncated inside its header"),
])
def test_idx_corruption_is_named(tmp_path, mangle, match):
    raw = idx_bytes(np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "bad").write_bytes(mangle(raw))
    with pytest.raises(lth.DataError, match=f"bad.*{match}.*delete it"):
        read_idx(tmp_path / "bad")


def test_cifar_archive_and_extracted_folder(tmp_path):
    (tmp_path / "c.tar.gz").write_bytes(cifar10_archive(per_batch=4))
    members = {"train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
               "test": ["cifar-10-batches-py/test_batch"]}
    from_tar = read_cifar(tmp_path / "c.tar.gz", members, "labels")
    assert from_tar["train"][0].shape == (20, 3, 32, 32)
    with tarfile.open(tmp_path / "c.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    from_dir = read_cifar(tmp_path / "x" / "cifar-10-batches-py", members, "labels")
    assert np.array_equal(from_tar["test"][0], from_dir["test"][0])


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/lth-pwned-by-pickle",))


def test_cifar_pickles_cannot_run_code(tmp_path):
    marker = Path("/tmp/lth-pwned-by-pickle")
    marker.unlink(missing_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        raw = pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    (tmp_path / "evil.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(lth.DataError, match="refusing to load"):
        read_cifar(tmp_path / "evil.tar.gz", {"test": ["cifar-10-batches-py/test_batch"]},
                   "labels")
    assert not marker.exists()


# ---- sources and downloads ------------------------------------------------------------


def test_mnist_from_an_explicit_directory(isolated):
    root = isolated / "mnist"
    root.mkdir()
    for name, raw in mnist_files().items():
        (root / name[:-3]).write_bytes(gzip.decompress(raw))  # un-gzipped names work too
    data = lth.load_dataset("mnist", root=str(root), val_size=20, download=False)
    assert data.x_train.dtype == torch.uint8 and data.input_shape == (1, 28, 28)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (100, 20, 30)
    assert data.augment == "none" and data.mean == (0.1307,)
    x = data.prepare(data.x_train[:4])
    expect = (data.x_train[:4].float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x, expect)


def test_download_verifies_and_caches(monkeypatch, isolated):
    files = mnist_files()
    server = Server(files)
    try:
        serve_as(monkeypatch, "mnist", files, server)
        data = lth.load_dataset("mnist", val_size=10)
        cached = isolated / "cache" / "mnist"
        assert sorted(p.name for p in cached.iterdir() if p.suffix != ".lock") == sorted(files)
        n = len(server.requests)
        lth.load_dataset("mnist", val_size=10)  # second load: no network
        assert len(server.requests) == n and len(data.y_test) == 30
    finally:
        server.close()


def test_checksum_mismatch_leaves_nothing_behind(monkeypatch, isolated):
    files = mnist_files()
    server = Server(files)
    try:
        serve_as(monkeypatch, "mnist", files, server, wrong="t10k-images-idx3-ubyte.gz")
        with pytest.raises(lth.DataError, match="t10k-images.*sha256 is .*expected 0000.*deleted"):
            lth.load_dataset("mnist")
        left = {p.name for p in (isolated / "cache" / "mnist").iterdir()}
        assert "t10k-images-idx3-ubyte.gz" not in left
        assert not any(name.endswith(".part") for name in left)
    finally:
        server.close()


def test_dropped_connection_resumes_with_a_range_request(monkeypatch, isolated):
    files = mnist_files(n_train=400)
    big = "train-images-idx3-ubyte.gz"
    server = Server(files, drop_first={big})
    try:
        serve_as(monkeypatch, "mnist", files, server, digest="md5")
        data = lth.load_dataset("mnist", val_size=10)
        ranged = [r for name, r in server.requests if name == big]
        assert ranged[0] is None and ranged[1].startswith("bytes=")
        assert int(ranged[1].split("=")[1].rstrip("-")) == len(files[big]) // 2
        assert len(data.y_train) == 390
    finally:
        server.close()


def test_unreachable_source_says_what_to_do(monkeypatch, isolated):
    files = mnist_files()
    specs = tuple(RemoteFile(n, sha256="0" * 64) for n in files)
    monkeypatch.setitem(vision.SOURCES, "mnist",
                        Source("mnist", specs, ("http://127.0.0.1:9/nothing/",)))
    monkeypatch.setattr("lth.data.download.time.sleep", lambda s: None)  # no backoff waits
    with pytest.raises(lth.DataError, match="could not download.*place a verified copy at"):
        lth.load_dataset("mnist")
    with pytest.raises(lth.DataError, match="downloads are off"):
        lth.load_dataset("mnist", download=False)


def test_explicit_root_wins_over_lth_data(monkeypatch, isolated):
    for where, seed in (("root", 1), ("env", 2)):
        (isolated / where).mkdir()
        for name, raw in mnist_files(seed=seed).items():
            (isolated / where / name).write_bytes(raw)
    monkeypatch.setenv("LTH_DATA", str(isolated / "env"))
    from_env = lth.load_dataset("mnist", download=False, val_size=10)
    from_root = lth.load_dataset("mnist", root=str(isolated / "root"), download=False,
                                 val_size=10)
    assert from_env.identity() != from_root.identity()
    expect = read_idx(isolated / "root" / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(from_root.x_test[:, 0].numpy(), expect)


def test_cifar10_download_and_default_augmentation(monkeypatch, isolated):
    files = {"cifar-10-python.tar.gz": cifar10_archive()}
    server = Server(files)
    try:
        serve_as(monkeypatch, "cifar10", files, server)
        data = lth.load_dataset("cifar10", val_size=4)
    finally:
        server.close()
    assert data.input_shape == (3, 32, 32) and data.augment == "crop_flip"
    assert len(data.y_train) == 36 and len(data.y_test) == 8 and data.num_classes == 10


def test_root_for_embedded_digits_is_an_error():
    with pytest.raises(lth.ConfigError, match="does not use data.root"):
        lth.load_dataset("digits", root="/tmp")


# ---- augmentation ---------------------------------------------------------------------


def test_crop_flip_is_seeded_and_moves_whole_images():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    a = crop_flip(x, torch.Generator().manual_seed(3))
    b = crop_flip(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    assert not torch.equal(a, crop_flip(x, torch.Generator().manual_seed(4)))
    # Every output image is a shifted (maybe mirrored) window of its own padded input.
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(64):
        windows = [padded[i, :, r:r + 8, c:c + 8] for r in range(9) for c in range(9)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(2)) for w in windows)
    unchanged = sum(torch.equal(a[i], x[i]) for i in range(64))
    assert unchanged < 10


def test_training_on_uint8_with_augmentation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 3, 8, 8), dtype=np.uint8)
    y = (x[:, 0].mean(axis=(1, 2)) > 127).astype(np.int64)
    data = lth.from_arrays(x[:160], y[:160], x[160:], y[160:], mean=(0.5,) * 3,
                           std=(0.25,) * 3, augment="crop_flip")
    model = lth.create_model("mlp", input_shape=data.input_shape, num_classes=2, hidden=[16])
    result = lth.LotteryModel(model, data, train={"duration": "40it", "batch_size": 16,
                                                  "eval_every": "20it"}, levels=1
                              ).run(store=tmp_path)
    assert result.table()["final_test_acc"].between(0, 1).all()


# ---- user torch Datasets ---------------------------------------------------------------


class Squares(torch.utils.data.Dataset):
    """Tiny 1×6×6 uint8 images: class 1 when the top-left pixel is bright."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 256, (n, 1, 6, 6), generator=g, dtype=torch.uint8)
        self.loads = 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.loads += 1
        return self.x[i], int(self.x[i, 0, 0, 0] > 127)


def run_squares(tmp_path, stream):
    train, test = Squares(120, 0), Squares(30, 1)
    data = lth.from_dataset(train, test, val_size=20, stream=stream, num_classes=2)
    streamed = isinstance(data.x_train, lth.data.StreamedSplit)
    assert streamed == stream
    assert len(data.y_train) == 100 and data.input_shape == (1, 6, 6)
    batch = data.x_train[torch.tensor([0, 5])]
    assert batch.dtype == torch.uint8 and batch.shape == (2, 1, 6, 6)
    model = lth.create_model("mlp", input_shape=data.input_shape, num_classes=2, hidden=[8])
    result = lth.LotteryModel(model, data, train={"duration": "20it", "batch_size": 10,
                                                  "eval_every": "10it"}, levels=1
                              ).run(store=tmp_path / str(stream))
    assert len(result.table()) == 2
    return result


def test_torch_datasets_materialised_or_streamed_agree(tmp_path):
    a = run_squares(tmp_path, stream=False)
    b = run_squares(tmp_path, stream=True)
    cols = ["best_test_acc", "final_test_acc", "early_stop_step"]
    assert a.table()[cols].equals(b.table()[cols])


def test_auto_streaming_follows_the_memory_budget():
    train, test = Squares(50, 0), Squares(10, 1)
    small = lth.from_dataset(train, test, max_bytes=10**9)
    big = lth.from_dataset(train, test, max_bytes=100)
    assert torch.is_tensor(small.x_train)
    assert isinstance(big.x_train, lth.data.StreamedSplit)


def test_bad_datasets_are_named():
    with pytest.raises(lth.DataError, match="not map-style"):
        lth.from_dataset(iter([]), Squares(3, 0))
    with pytest.raises(lth.DataError, match="test dataset is empty"):
        lth.from_dataset(Squares(3, 0), Squares(0, 0))


def test_cifar100_fine_labels_from_a_local_archive(isolated):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i, name in enumerate(["train", "test"]):
            rng = np.random.default_rng(i)
            batch = {b"data": rng.integers(0, 256, (12, 3072), dtype=np.uint8),
                     b"fine_labels": rng.integers(0, 100, 12).tolist(),
                     b"coarse_labels": rng.integers(0, 20, 12).tolist()}
            raw = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    root = isolated / "c100"
    root.mkdir()
    (root / "cifar-100-python.tar.gz").write_bytes(buf.getvalue())
    data = lth.load_dataset("cifar100", root=str(root), val_size=2, download=False)
    assert data.num_classes == 100 and len(data.y_train) == 10 and len(data.y_test) == 12
    assert int(torch.cat([data.y_train, data.y_val]).max()) < 100


# ---- review fixes -----------------------------------------------------------------------


def test_bad_checksum_falls_through_to_the_next_mirror(monkeypatch, isolated):
    files = mnist_files()
    good, bad = Server(files), Server({n: b"x" + b[1:] for n, b in files.items()})
    try:
        specs = tuple(RemoteFile(n, sha256=hashlib.sha256(b).hexdigest())
                      for n, b in files.items())
        monkeypatch.setitem(vision.SOURCES, "mnist", Source("mnist", specs, (bad.url, good.url)))
        assert len(lth.load_dataset("mnist", val_size=10).y_test) == 30
    finally:
        good.close()
        bad.close()


def test_concurrent_downloads_of_one_file_take_turns(isolated):
    from concurrent.futures import ThreadPoolExecutor

    from lth.data.download import download

    body = os.urandom(300_000)
    server = Server({"f.bin": body})
    try:
        dest = isolated / "cache" / "f.bin"
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: download([server.url + "f.bin"], dest,
                                                   sha256=hashlib.sha256(body).hexdigest()),
                                range(4)))
        assert all(p == dest for p in got) and dest.read_bytes() == body
        assert len(server.requests) == 1  # the others found the verified file
    finally:
        server.close()


def test_unwritable_cache_is_a_clear_error(monkeypatch, isolated):
    monkeypatch.setenv("LTH_CACHE", "/proc/no-such-dir/cache")
    monkeypatch.setitem(vision.SOURCES, "mnist", Source(
        "mnist", (RemoteFile("a.gz", sha256="0" * 64),), ("http://127.0.0.1:9/",)))
    with pytest.raises(lth.DataError, match="cannot write to the download cache.*LTH_CACHE"):
        lth.load_dataset("mnist")


def test_a_datasets_own_subfolder_wins(monkeypatch, isolated):
    shared = isolated / "shared"
    (shared / "mnist").mkdir(parents=True)
    for name, raw in mnist_files(seed=1).items():
        (shared / name).write_bytes(raw)  # some other IDX dataset at the top level
    for name, raw in mnist_files(seed=2).items():
        (shared / "mnist" / name).write_bytes(raw)
    monkeypatch.setenv("LTH_DATA", str(shared))
    data = lth.load_dataset("mnist", download=False, val_size=10)
    expect = read_idx(shared / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(data.x_test[:, 0].numpy(), expect)


def test_normalisation_is_checked_and_not_stale_after_replace():
    import dataclasses

    x = np.full((10, 3, 4, 4), 255, dtype=np.uint8)
    y = np.arange(10) % 2
    d = lth.from_arrays(x, y, x[:2], y[:2], mean=np.array([0.5, 0.5, 0.5]), std=(0.25,) * 3)
    assert d.mean == (0.5, 0.5, 0.5)
    assert float(d.prepare(d.x_test).max()) == 2.0
    other = dataclasses.replace(d, mean=(0.0,), std=(1.0,))
    assert float(other.prepare(other.x_test).max()) == 1.0
    for kwargs, match in [({"mean": (0.5, 0.5), "std": (1.0, 1.0)}, "one per channel"),
                          ({"mean": (0.5,), "std": (0.0,)}, "must be > 0")]:
        with pytest.raises(lth.DataError, match=match):
            lth.from_arrays(x, y, x[:2], y[:2], **kwargs)
    with pytest.raises(lth.DataError, match="normalise uint8 images"):
        lth.from_arrays(x.astype(np.float32), y, x[:2].astype(np.float32), y[:2],
                        mean=(0.5,), std=(0.5,))


def test_inconsistent_splits_and_augmentation_are_refused():
    x, y = np.zeros((10, 3), dtype=np.float32), np.arange(10) % 2
    with pytest.raises(lth.DataError, match="x_val is .* but x_train"):
        lth.from_arrays(x, y, x, y, x_val=np.zeros((4, 5), dtype=np.float32), y_val=y[:4])
    with pytest.raises(lth.DataError, match="crop_flip' needs images"):
        lth.from_arrays(x, y, x, y, augment="crop_flip")


class Relabelled(Squares):
    targets = None

    def __init__(self, n, seed):
        super().__init__(n, seed)
        self.targets = [0] * n  # stale: the transform below decides the labels
        self.target_transform = lambda t: t

    def __getitem__(self, i):
        return self.x[i], 1


def test_from_dataset_uses_item_labels_and_names_bad_items():
    data = lth.from_dataset(Relabelled(20, 0), Relabelled(5, 1), val_size=0, num_classes=2)
    assert data.y_train.tolist() == [1] * 20
    streamed = lth.from_dataset(Relabelled(20, 0), Relabelled(5, 1), val_size=0,
                                num_classes=2, stream=True)
    assert streamed.y_train.tolist() == [1] * 20

    class Ragged(Squares):
        def __getitem__(self, i):
            return self.x[i, :, : 6 - i % 2], 0

    with pytest.raises(lth.DataError, match="item 1 .* every input must have one shape"):
        lth.from_dataset(Ragged(4, 0), Squares(2, 0))

    class VectorLabels(Squares):
        def __getitem__(self, i):
            return self.x[i], [0, 1]

    # Vector labels are fine (multi-label, regression); the splits must agree.
    with pytest.raises(lth.DataError, match=r"the label of item 0 of the test dataset is "
                                            r"int64 \(\) but that of item 0 of the train "
                                            r"dataset is int64 \(2,\)"):
        lth.from_dataset(VectorLabels(4, 0), Squares(2, 0))


def test_streamed_split_takes_indices_from_any_device():
    split = lth.data.StreamedSplit(Squares(10, 0))
    idx = torch.tensor([3, 1])
    assert torch.equal(split[idx], split.dataset.x[[3, 1]])


def test_cifar_batches_with_numpy_scalar_labels(tmp_path):
    rng = np.random.default_rng(0)
    batch = {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
             "labels": [np.int64(1), np.int64(2), np.int64(0)]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    out = read_cifar(tmp_path, {"test": ["cifar-10-batches-py/test_batch"]}, "labels")
    assert out["test"][1].tolist() == [1, 2, 0]


def test_default_validation_size_is_the_datasets_own():
    assert len(lth.load_dataset("digits").y_val) == len(lth.load_digits().y_val) == 144


def test_an_idx_header_whose_size_overflows_64_bits_is_named(tmp_path):
    # 2^31 · 2^31 · 4 = 2^64: wraps to 0 in 64-bit arithmetic, so an empty body "fits".
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (2**31, 2**31, 4))
    (tmp_path / "huge").write_bytes(header)
    with pytest.raises(lth.DataError, match=r"huge holds 0 data bytes but its header .* needs "
                                            r"18446744073709551616"):
        read_idx(tmp_path / "huge")


def test_a_partial_copy_is_an_error_not_mixed_with_another_source(monkeypatch, isolated):
    for where, seed in (("env", 2), ("system", 3)):
        (isolated / where).mkdir()
        for name, raw in mnist_files(seed=seed).items():
            (isolated / where / name).write_bytes(raw)
    (isolated / "env" / "t10k-labels-idx1-ubyte.gz").unlink()  # $LTH_DATA: a partial copy
    monkeypatch.setenv("LTH_DATA", str(isolated / "env"))
    source = vision.SOURCES["mnist"]
    monkeypatch.setitem(vision.SOURCES, "mnist", Source(
        "mnist", source.files, source.mirrors, system_dirs=(str(isolated / "system"),)))
    with pytest.raises(lth.DataError, match=r"env holds 3 of the 4 mnist files but not "
                                            r"t10k-labels-idx1-ubyte.gz.*complete it"):
        lth.load_dataset("mnist", download=False)
    monkeypatch.delenv("LTH_DATA")
    whole = lth.load_dataset("mnist", download=False, val_size=10)  # the system copy, whole
    expect = read_idx(isolated / "system" / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(whole.x_test[:, 0].numpy(), expect)
