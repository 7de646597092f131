"""Experiment trackers for accelerate (a CSV file always) and the learning-curve plot."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from accelerate.tracking import GeneralTracker  # noqa: E402

from carvana_seg.config import ConfigError  # noqa: E402
from carvana_seg.io_utils import atomic_path  # noqa: E402

OPTIONAL_TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class CSVTracker(GeneralTracker):
    """One row per logged step in `metrics.csv`; on resume, rows past the resumed step are dropped."""

    name = "csv"
    requires_logging_directory = False

    def __init__(self, path: str | Path, keep_through_step: int = -1):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []
        if keep_through_step >= 0 and self.path.is_file():
            kept = pd.read_csv(self.path)
            self.rows = kept[kept["step"] <= keep_through_step].to_dict("records")

    @property
    def tracker(self) -> CSVTracker:
        return self

    def store_init_configuration(self, values: dict) -> None:
        """The resolved config is saved beside the run (config.yaml), not in the CSV."""

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.rows.append({"step": step, **values})
        with atomic_path(self.path) as tmp:
            pd.DataFrame(self.rows).to_csv(tmp, index=False)


def check_trackers(names: str) -> list[str]:
    """The optional trackers named in `train.trackers`; an unknown or uninstalled one is an error."""
    optional = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name == "csv":
            continue
        if name not in OPTIONAL_TRACKERS:
            raise ConfigError(f"train.trackers: unknown tracker {name!r}; available: csv, {', '.join(OPTIONAL_TRACKERS)}")
        if importlib.util.find_spec(OPTIONAL_TRACKERS[name]) is None:
            raise ConfigError(f"train.trackers: {name!r} is not installed (pip install {OPTIONAL_TRACKERS[name]})")
        optional.append(name)
    return optional


def build_trackers(names: str, metrics_csv: Path, keep_through_step: int) -> list:
    """`csv` always (into `metrics_csv`, runs/<exp>/fold<k>/metrics.csv); the others by name when
    their package is installed (an error otherwise)."""
    trackers: list = [CSVTracker(metrics_csv, keep_through_step)]
    for name in check_trackers(names):
        if name == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
        if name == "mlflow":
            os.environ.setdefault("MLFLOW_TRACKING_URI", f"file:{metrics_csv.parent.parent.parent / 'mlruns'}")  # runs/mlruns
        trackers.append(name)
    return trackers


def plot_learning_curve(metrics_csv: Path, out_png: Path, title: str) -> None:
    """Train loss and validation Dice (on the epochs that were validated) against epoch,
    with the best validated epoch marked."""
    table = pd.read_csv(metrics_csv)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(table["epoch"], table["train_loss"], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    validated = table.dropna(subset=["val_dice"]) if "val_dice" in table else table.iloc[:0]
    ax_dice.set(xlabel="epoch", ylabel="mean per-image Dice", title="validation (none yet)")
    if len(validated):
        ax_dice.plot(validated["epoch"], validated["val_dice"], marker="o", color="tab:green")
        best = validated.loc[validated["val_dice"].idxmax()]
        ax_dice.axvline(best["epoch"], color="grey", linestyle=":")
        ax_dice.set_title(f"validation (best {best['val_dice']:.4f})")
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
