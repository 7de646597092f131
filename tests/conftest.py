"""Shared fixtures: the real Carvana subset (skipped when absent) and tiny synthetic layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REAL_CARVANA = Path(__file__).resolve().parents[2] / "shared" / "carvana"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def real_carvana() -> Path:
    if not (REAL_CARVANA / "train_masks.csv").is_file():
        pytest.skip(f"real Carvana subset not found at {REAL_CARVANA} (optional: the project runs without it)")
    return REAL_CARVANA
