"""IDX parsing, checksum verification and mirror fetching (against a loopback HTTP server)."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from export.mnist_data import (
    CHECKSUM_FILE,
    DEFAULT_DATA_DIR,
    DEFAULT_MIRRORS,
    EXPECTED_LAYOUTS,
    TEST_LABELS,
    MnistDataError,
    load_mnist,
    mirrors_from_env,
    parse_idx,
    read_idx_file,
    to_model_input,
)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1" if type_code == 0x08 else ">i4").tobytes()


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_official_files_load_and_verify(mnist) -> None:
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_labels.shape == (10000,)
    assert np.bincount(mnist.test_labels).tolist()[:3] == [980, 1135, 1032]
    assert set(mnist.sha256) == set(EXPECTED_LAYOUTS)
    x = to_model_input(mnist.test_images[:2])
    assert x.shape == (2, 784) and x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0


def test_parse_idx_roundtrip() -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(array)), array)
    ints = np.array([1, -2, 300], dtype=np.int32)
    np.testing.assert_array_equal(parse_idx(idx_bytes(ints, 0x0C)), ints)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad IDX magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x00", "rank 0"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "header of rank 3 needs 16 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "trailing bytes"),
    ],
)
def test_malformed_headers(raw: bytes, message: str) -> None:
    with pytest.raises(MnistDataError, match=message) as info:
        parse_idx(raw, "some-file")
    assert "some-file" in str(info.value)


def _copy_data(tmp_path: Path) -> Path:
    target = tmp_path / "mnist"
    shutil.copytree(DEFAULT_DATA_DIR, target)
    return target


def test_raw_files_are_read_too(tmp_path: Path) -> None:
    data_dir = _copy_data(tmp_path)
    gz = data_dir / f"{TEST_LABELS}.gz"
    (data_dir / TEST_LABELS).write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    assert load_mnist(data_dir).test_labels.shape == (10000,)


def test_wrong_checksum_names_file_and_expectation(tmp_path: Path) -> None:
    data_dir = _copy_data(tmp_path)
    raw = bytearray(gzip.decompress((data_dir / f"{TEST_LABELS}.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a valid label file, but not the official one
    (data_dir / f"{TEST_LABELS}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(MnistDataError) as info:
        load_mnist(data_dir)
    text = str(info.value)
    assert f"{TEST_LABELS}.gz" in text and "SHA-256" in text and "ff7bcfd416de" in text


def test_truncated_gzip(tmp_path: Path) -> None:
    data_dir = _copy_data(tmp_path)
    path = data_dir / f"{TEST_LABELS}.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(MnistDataError, match="not a valid gzip file"):
        read_idx_file(path)
    with pytest.raises(MnistDataError, match=TEST_LABELS):
        load_mnist(data_dir)


def test_wrong_shape_for_its_name(tmp_path: Path) -> None:
    data_dir = _copy_data(tmp_path)
    (data_dir / f"{TEST_LABELS}.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(MnistDataError, match=r"expected uint8 IDX of shape \(10000,\)"):
        load_mnist(data_dir)


def test_missing_file_without_fetch(tmp_path: Path) -> None:
    data_dir = _copy_data(tmp_path)
    (data_dir / f"{TEST_LABELS}.gz").unlink()
    with pytest.raises(MnistDataError, match=f"{TEST_LABELS}.gz: file not found"):
        load_mnist(data_dir)


def test_malformed_checksum_file(tmp_path: Path) -> None:
    data_dir = _copy_data(tmp_path)
    (data_dir / CHECKSUM_FILE).write_text("not-a-digest  file\n")
    with pytest.raises(MnistDataError, match=CHECKSUM_FILE):
        load_mnist(data_dir)


def test_fetch_from_mirror(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, root = mirror
    for name in EXPECTED_LAYOUTS:
        shutil.copy(DEFAULT_DATA_DIR / f"{name}.gz", root / f"{name}.gz")
    data_dir = tmp_path / "fresh"  # empty: no files, no checksum file (built-in sums apply)
    data = load_mnist(data_dir, fetch=True, mirrors=[url])
    assert data.test_images.shape == (10000, 28, 28)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(f"{n}.gz" for n in EXPECTED_LAYOUTS)


def test_fetch_skips_a_bad_mirror_and_refuses_wrong_bytes(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, root = mirror
    data_dir = _copy_data(tmp_path)
    (data_dir / f"{TEST_LABELS}.gz").unlink()
    # The mirror serves a well-formed label file with different content: wrong checksum.
    wrong = np.zeros(10000, np.uint8)
    (root / f"{TEST_LABELS}.gz").write_bytes(gzip.compress(idx_bytes(wrong)))
    dead = "http://127.0.0.1:9/"  # discard port: connection refused
    with pytest.raises(MnistDataError) as info:
        load_mnist(data_dir, fetch=True, mirrors=[dead, url])
    text = str(info.value)
    assert "SHA-256" in text and url in text and dead in text
    assert not (data_dir / f"{TEST_LABELS}.gz").exists()
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".part")]  # nothing left behind

    shutil.copy(DEFAULT_DATA_DIR / f"{TEST_LABELS}.gz", root / f"{TEST_LABELS}.gz")
    assert load_mnist(data_dir, fetch=True, mirrors=[dead, url]).test_labels.shape == (10000,)


def test_mnist_mirrors_environment_variable_names_the_mirrors(
    tmp_path: Path, mirror_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mirrors passed: MNIST_MIRRORS (comma-separated, spaces allowed) decides, in order."""
    url = mirror_server.url
    for name in EXPECTED_LAYOUTS:
        shutil.copy(DEFAULT_DATA_DIR / f"{name}.gz", mirror_server.root / f"{name}.gz")
    dead = "http://127.0.0.1:9/"
    monkeypatch.setenv("MNIST_MIRRORS", f" {dead} , {url} ,")
    assert mirrors_from_env() == (dead, url)
    data = load_mnist(tmp_path / "fresh", fetch=True)
    assert data.test_labels.shape == (10000,)
    assert sorted(mirror_server.requested) == sorted(f"/{name}.gz" for name in EXPECTED_LAYOUTS)

    monkeypatch.setenv("MNIST_MIRRORS", dead)  # only a dead mirror: it is the one named
    with pytest.raises(MnistDataError, match="no mirror served") as info:
        load_mnist(tmp_path / "again", fetch=True)
    assert dead in str(info.value) and url not in str(info.value)


def test_without_mnist_mirrors_the_public_mirrors_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MNIST_MIRRORS", raising=False)
    assert mirrors_from_env() == DEFAULT_MIRRORS
    monkeypatch.setenv("MNIST_MIRRORS", "  ")
    assert mirrors_from_env() == DEFAULT_MIRRORS
