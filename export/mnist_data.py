"""MNIST in its original IDX layout: read, validate, verify, and (optionally) fetch.

The loader never trains on bad data: every file's header is checked against what MNIST must
look like, and the SHA-256 of the *decompressed* bytes is compared with
``SHA256SUMS.uncompressed`` (gzip headers differ between mirrors that hold the same data, so
the .gz bytes cannot be compared). Any problem raises :class:`MnistDataError` naming the file
and what was expected.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The repository's committed copy; relative to the project root, which is this file's parent.
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
CHECKSUM_FILE = "SHA256SUMS.uncompressed"

# The four files and what their headers must say: (IDX rank, trailing dims, item count).
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


@dataclass(frozen=True)
class IdxLayout:
    dims: tuple[int, ...]  # full expected shape, count first


EXPECTED_LAYOUTS: dict[str, IdxLayout] = {
    TRAIN_IMAGES: IdxLayout((60000, 28, 28)),
    TRAIN_LABELS: IdxLayout((60000,)),
    TEST_IMAGES: IdxLayout((10000, 28, 28)),
    TEST_LABELS: IdxLayout((10000,)),
}

# Same values as data/mnist/SHA256SUMS.uncompressed; used only when a data directory (e.g. one
# being filled from a mirror) has no checksum file of its own.
BUILTIN_SHA256: dict[str, str] = {
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
}

# Public mirrors that serve `<name>.gz`. Overridable with the MNIST_MIRRORS environment
# variable (comma separated base URLs) or the `mirrors` argument.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# IDX type codes (third magic byte) -> numpy big-endian dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class MnistDataError(ValueError):
    """A data file is missing, malformed, truncated or not the expected MNIST file."""


@dataclass(frozen=True)
class MnistData:
    """The verified dataset: uint8 images [N, 28, 28] and uint8 labels [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    data_dir: Path
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> verified digest


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (already decompressed) into an array, validating the header.

    The magic number is two zero bytes, a type code and the rank; then one big-endian uint32
    per dimension; then exactly prod(dims) items.
    """
    if len(raw) < 4:
        raise MnistDataError(f"{name}: {len(raw)} bytes is too short for an IDX header (need >= 4)")
    zero0, zero1, type_code, rank = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        raise MnistDataError(
            f"{name}: bad IDX magic {raw[:4].hex()}: expected the first two bytes to be 00 00"
        )
    if type_code not in _IDX_DTYPES:
        raise MnistDataError(f"{name}: unknown IDX type code 0x{type_code:02x}")
    if rank == 0:
        raise MnistDataError(f"{name}: IDX rank 0 is not supported")
    header_len = 4 + 4 * rank
    if len(raw) < header_len:
        raise MnistDataError(
            f"{name}: header of rank {rank} needs {header_len} bytes, file has {len(raw)}"
        )
    dims = struct.unpack(f">{rank}I", raw[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected_payload = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header_len
    if payload != expected_payload:
        what = "truncated" if payload < expected_payload else "has trailing bytes"
        raise MnistDataError(
            f"{name}: {what}: header promises {expected_payload} payload bytes for shape "
            f"{tuple(dims)}, file has {payload}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)


def read_idx_file(path: Path) -> bytes:
    """The decompressed bytes of an IDX file, gzip-compressed or raw (detected by magic)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MnistDataError(f"{path}: file not found") from None
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise MnistDataError(
                f"{path}: not a valid gzip file ({exc}); truncated download?"
            ) from exc
    return data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checksums(data_dir: Path) -> dict[str, str]:
    """Expected digests from ``<data_dir>/SHA256SUMS.uncompressed`` (sha256sum format)."""
    path = data_dir / CHECKSUM_FILE
    if not path.exists():
        return dict(BUILTIN_SHA256)
    sums: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise MnistDataError(f"{path}:{lineno}: expected '<sha256>  <file name>', got {line!r}")
        sums[parts[1].lstrip("*")] = parts[0].lower()
    missing = sorted(set(EXPECTED_LAYOUTS) - set(sums))
    if missing:
        raise MnistDataError(f"{path}: no checksum for {', '.join(missing)}")
    return sums


def find_file(data_dir: Path, name: str) -> Path | None:
    """The .gz copy if present, else the raw one, else None."""
    for candidate in (data_dir / f"{name}.gz", data_dir / name):
        if candidate.exists():
            return candidate
    return None


def verified_array(path: Path, name: str, expected_sha256: str) -> tuple[np.ndarray, str]:
    """Read, parse and verify one file; returns the array and its verified digest."""
    raw = read_idx_file(path)
    array = parse_idx(raw, str(path))
    layout = EXPECTED_LAYOUTS[name]
    if array.dtype != np.uint8 or array.shape != layout.dims:
        raise MnistDataError(
            f"{path}: expected uint8 IDX of shape {layout.dims} for {name}, "
            f"got {array.dtype} {array.shape}"
        )
    digest = sha256_hex(raw)
    if digest != expected_sha256:
        raise MnistDataError(
            f"{path}: SHA-256 of the decompressed bytes is {digest}, expected {expected_sha256} "
            f"(from {CHECKSUM_FILE}); the file is corrupt or not the official {name}"
        )
    return array, digest


def mirrors_from_env() -> tuple[str, ...]:
    value = os.environ.get("MNIST_MIRRORS", "").strip()
    if not value:
        return DEFAULT_MIRRORS
    return tuple(url.strip() for url in value.split(",") if url.strip())


def fetch_file(
    data_dir: Path,
    name: str,
    expected_sha256: str,
    mirrors: Sequence[str],
    timeout_s: float = 30.0,
) -> Path:
    """Download ``<name>.gz`` from the first mirror that serves bytes with the right digest.

    The download lands in a temporary file beside the target and is renamed into place only
    after it decompresses, parses and verifies, so a failed fetch leaves nothing behind.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / f"{name}.gz"
    failures: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + f"/{name}.gz"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=data_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
            verified_array(tmp, name, expected_sha256)
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError, MnistDataError) as exc:
            failures.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise MnistDataError(
        f"{target}: missing, and no mirror served a copy with SHA-256 {expected_sha256} "
        "of the decompressed bytes:\n  " + "\n  ".join(failures or ["no mirrors configured"])
    )


def load_mnist(
    data_dir: Path | str = DEFAULT_DATA_DIR,
    fetch: bool = False,
    mirrors: Sequence[str] | None = None,
) -> MnistData:
    """Load and verify the four MNIST files from ``data_dir``.

    With ``fetch=True`` a missing file is downloaded from ``mirrors`` (default: the
    ``MNIST_MIRRORS`` environment variable, else :data:`DEFAULT_MIRRORS`) and verified the
    same way; without it a missing file is an error.
    """
    data_dir = Path(data_dir)
    sums = read_checksums(data_dir)
    arrays: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for name in EXPECTED_LAYOUTS:
        path = find_file(data_dir, name)
        if path is None:
            if not fetch:
                raise MnistDataError(
                    f"{data_dir / (name + '.gz')}: file not found (expected the official {name}, "
                    f"gzip or raw); pass fetch=True / --fetch-data to download it"
                )
            path = fetch_file(data_dir, name, sums[name], mirrors or mirrors_from_env())
        arrays[name], digests[name] = verified_array(path, name, sums[name])
    labels_ok = all(int(arrays[n].max()) <= 9 for n in (TRAIN_LABELS, TEST_LABELS))
    if not labels_ok:
        raise MnistDataError(f"{data_dir}: labels outside 0-9")
    return MnistData(
        train_images=arrays[TRAIN_IMAGES],
        train_labels=arrays[TRAIN_LABELS],
        test_images=arrays[TEST_IMAGES],
        test_labels=arrays[TEST_LABELS],
        data_dir=data_dir,
        sha256=digests,
    )


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 784] in [0, 1]: the one input contract of every path."""
    return images.reshape(len(images), 784).astype(np.float32) / np.float32(255.0)
