"""The training report of a version: metrics JSON and a PNG (learning curves + confusion
matrix), both in ``<version>/assets.extra/`` so they travel with the version they describe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REPORT_JSON = "training_report.json"
REPORT_PNG = "training_report.png"


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10) -> np.ndarray:
    """Rows: true digit, columns: predicted digit."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def write_report_json(directory: Path, report: dict) -> Path:
    path = Path(directory) / REPORT_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path


def write_report_png(
    directory: Path,
    title: str,
    history: dict[str, list[float]],
    step_losses: list[tuple[int, float]],
    confusion: np.ndarray,
) -> Path:
    """Three panels: loss per step, accuracy per epoch (train and test), confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc, ax_cm) = plt.subplots(1, 3, figsize=(15, 4.5))
    fig.suptitle(title)
    if step_losses:
        steps, losses = zip(*step_losses, strict=True)
        ax_loss.plot(steps, losses, label="train loss (running mean)")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()

    epochs = np.arange(1, len(history.get("accuracy", [])) + 1)
    for key, label in (("accuracy", "train"), ("val_accuracy", "test sample")):
        if history.get(key):
            ax_acc.plot(epochs, history[key], marker="o", label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()

    shown = np.log1p(confusion)  # the diagonal would drown every mistake on a linear scale
    ax_cm.imshow(shown, cmap="Blues")
    bright = shown.max() / 2
    for (row, col), count in np.ndenumerate(confusion):
        if count:
            color = "white" if shown[row, col] > bright else "black"
            ax_cm.text(col, row, str(count), ha="center", va="center", fontsize=6, color=color)
    ax_cm.set_xticks(range(10))
    ax_cm.set_yticks(range(10))
    ax_cm.set_xlabel("predicted")
    ax_cm.set_ylabel("true")
    ax_cm.set_title("confusion matrix (test set)")

    path = Path(directory) / REPORT_PNG
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
