"""Training: precision choice from the CPU flags, and seeded reproducibility."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from export.training import TrainConfig, choose_precision, cpu_has_avx512_bf16


def test_cpu_flag_detection(tmp_path: Path) -> None:
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    without = tmp_path / "b"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_vnni\n")
    assert cpu_has_avx512_bf16(with_bf16)
    assert not cpu_has_avx512_bf16(without)
    assert not cpu_has_avx512_bf16(tmp_path / "missing")


def test_precision_choice() -> None:
    assert choose_precision("cnn", "auto", has_bf16=True)[0] == "mixed_bfloat16"
    policy, reason = choose_precision("cnn", "auto", has_bf16=False)
    assert policy == "float32" and "lacks avx512_bf16" in reason
    assert choose_precision("softmax", "auto", has_bf16=True)[0] == "float32"
    assert choose_precision("cnn", "float32", has_bf16=True)[0] == "float32"
    assert choose_precision("softmax", "bfloat16", has_bf16=False)[0] == "mixed_bfloat16"
    with pytest.raises(ValueError):
        choose_precision("cnn", "fp16")


def test_same_seed_same_weights() -> None:
    pytest.importorskip("tensorflow")
    from export.mnist_data import load_mnist

    data = load_mnist()

    def weights(seed: int) -> list[np.ndarray]:
        config = TrainConfig(
            arch="softmax",
            epochs=1,
            seed=seed,
            train_limit=2048,
            validate_each_epoch=False,
            progress_every=0,
        )
        out = io.StringIO()
        result = train_once(config, data, out)
        assert "precision: float32" in out.getvalue()
        return [w.copy() for w in result.model.get_weights()]

    first, again, other = weights(7), weights(7), weights(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def train_once(config, data, out):
    from export.training import train

    return train(config, data, out)
