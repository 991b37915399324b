"""Seeded, reproducible training with the fast recipe, and progress on stdout.

Recipe (measured in docs/TOOLCHAIN_FINDINGS): Adam 2e-3 with cosine decay over the whole
run, batch 256, shuffle over the full training set, tf.data autotune OFF (it stalls `fit` on
small VMs), and bf16 mixed precision for the CNN where the CPU has avx512_bf16 (elsewhere bf16
is emulated and slower than float32).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
import tensorflow as tf

from export.mnist_data import MnistData, to_model_input
from export.models import DEFAULT_EPOCHS, DEFAULT_LEARNING_RATE, build_model

PRECISIONS = ("auto", "bfloat16", "float32")


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    epochs: int | None = None  # None: the architecture's default
    seed: int = 0
    batch_size: int = 256
    learning_rate: float | None = None  # None: the architecture's default
    precision: str = "auto"  # auto | bfloat16 | float32
    train_limit: int | None = None  # first N training images only (tests)
    validate_each_epoch: bool = True  # test-sample curve per epoch, for the report
    validation_sample: int = 2000  # first N test images: a curve, not the gate's full evaluation
    progress_every: int = 50  # print a progress line every N steps (0: never)

    @property
    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.arch]

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LEARNING_RATE[self.arch]


@dataclass
class TrainResult:
    model: keras.Model
    config: TrainConfig
    precision: str  # the policy that actually ran: "float32" or "mixed_bfloat16"
    precision_reason: str
    history: dict[str, list[float]]  # per epoch: loss, accuracy, val_loss, val_accuracy
    step_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, running loss)
    train_seconds: float = 0.0
    steps: int = 0

    def summary(self) -> dict:
        return {
            "config": asdict(self.config),
            "epochs": self.config.resolved_epochs,
            "learning_rate": self.config.resolved_learning_rate,
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "steps": self.steps,
            "train_seconds": round(self.train_seconds, 3),
            "history": self.history,
        }


def cpu_has_avx512_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True where the CPU advertises native bf16 dot products (the only place bf16 is fast)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return any(
        line.startswith("flags") and "avx512_bf16" in line.split() for line in text.splitlines()
    )


def choose_precision(arch: str, requested: str, has_bf16: bool | None = None) -> tuple[str, str]:
    """The Keras dtype policy to train with, and a sentence saying why."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "float32":
        return "float32", "float32 requested"
    if requested == "bfloat16":
        return "mixed_bfloat16", "bfloat16 requested"
    if arch == "softmax":
        # One 784x10 matmul: nothing to gain, a little accuracy to lose.
        return "float32", "auto: softmax trains in float32 (bf16 gains nothing for one matmul)"
    has_bf16 = cpu_has_avx512_bf16() if has_bf16 is None else has_bf16
    if has_bf16:
        return "mixed_bfloat16", "auto: CPU has avx512_bf16, training in bf16 mixed precision"
    return "float32", "auto: CPU lacks avx512_bf16 (bf16 would be emulated), training in float32"


def make_dataset(
    images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool
) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).prefetch(2)
    options = tf.data.Options()
    # Autotune stalls fit for ~14 s per epoch and at teardown on 2-core machines.
    options.autotune.enabled = False
    options.deterministic = True
    return ds.with_options(options)


class ProgressPrinter(keras.callbacks.Callback):
    """A line every N steps and one per epoch: readable in logs, unlike a progress bar."""

    def __init__(
        self,
        epochs: int,
        steps_per_epoch: int,
        every: int,
        out: TextIO,
        on_batch_end: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.on_batch_end = on_batch_end
        self.epochs, self.steps_per_epoch, self.every, self.out = (
            epochs,
            steps_per_epoch,
            every,
            out,
        )
        self.start = time.monotonic()
        self.epoch = 0
        self.step_losses: list[tuple[int, float]] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.on_batch_end is not None:
            self.on_batch_end()  # the export's interrupt check: stops fit between two steps
        logs = logs or {}
        step = self.epoch * self.steps_per_epoch + batch + 1
        if "loss" in logs and (batch + 1) % 10 == 0:
            self.step_losses.append((step, float(logs["loss"])))
        if self.every and (batch + 1) % self.every == 0:
            print(
                f"  epoch {self.epoch + 1}/{self.epochs}  step {batch + 1}/{self.steps_per_epoch}"
                f"  loss {float(logs.get('loss', math.nan)):.4f}"
                f"  acc {float(logs.get('accuracy', math.nan)):.4f}"
                f"  {time.monotonic() - self.start:6.1f} s",
                file=self.out,
                flush=True,
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        val = logs.get("val_accuracy")
        val_text = f"  test-sample acc {float(val):.4f}" if val is not None else ""
        print(
            f"  epoch {epoch + 1}/{self.epochs} done: loss {float(logs.get('loss', math.nan)):.4f}"
            f"  acc {float(logs.get('accuracy', math.nan)):.4f}{val_text}"
            f"  {time.monotonic() - self.start:6.1f} s",
            file=self.out,
            flush=True,
        )


def train(
    config: TrainConfig,
    data: MnistData,
    out: TextIO = sys.stdout,
    on_batch_end: Callable[[], None] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``data``; the same config and seed give the same weights.

    ``on_batch_end``: called after every step (may raise to stop training)."""
    keras.utils.set_random_seed(config.seed)
    policy, reason = choose_precision(config.arch, config.precision)
    print(f"precision: {policy} ({reason})", file=out, flush=True)

    train_x = to_model_input(data.train_images)
    train_y = data.train_labels
    if config.train_limit is not None:
        train_x, train_y = train_x[: config.train_limit], train_y[: config.train_limit]
    sample = config.validation_sample
    test_x, test_y = to_model_input(data.test_images[:sample]), data.test_labels[:sample]

    epochs = config.resolved_epochs
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.resolved_learning_rate, decay_steps=max(1, epochs * steps_per_epoch)
    )
    model = build_model(config.arch, policy)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    train_ds = make_dataset(train_x, train_y, config.batch_size, config.seed, shuffle=True)
    val_ds = (
        make_dataset(test_x, test_y, 1000, config.seed, shuffle=False)
        if config.validate_each_epoch
        else None
    )
    progress = ProgressPrinter(
        epochs, steps_per_epoch, config.progress_every, out, on_batch_end=on_batch_end
    )
    print(
        f"training {config.arch}: {len(train_x)} images, {epochs} epochs x {steps_per_epoch} steps,"
        f" batch {config.batch_size}, Adam {config.resolved_learning_rate:g} + cosine decay,"
        f" seed {config.seed}",
        file=out,
        flush=True,
    )
    start = time.monotonic()
    fit = model.fit(
        train_ds,
        epochs=epochs,
        validation_data=val_ds,
        callbacks=[progress],
        verbose=0,
        shuffle=False,
    )
    seconds = time.monotonic() - start
    history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    return TrainResult(
        model=model,
        config=config,
        precision=policy,
        precision_reason=reason,
        history=history,
        step_losses=progress.step_losses,
        train_seconds=seconds,
        steps=epochs * steps_per_epoch,
    )
