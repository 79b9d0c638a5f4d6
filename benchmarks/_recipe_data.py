"""Command-line arguments naming the shipped recipe's data, shared by the training benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_recipe_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data`` (training roots), ``--val-data`` and ``--labels`` (the Dubai label maps)."""
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        default=[REPO / "data" / "dubai_dense", REPO / "data" / "synth"],
        help="training roots (default: the shipped recipe's)",
    )
    parser.add_argument("--val-data", type=Path, default=REPO / "data" / "dubai")
    parser.add_argument(
        "--labels",
        type=Path,
        default=REPO.parent / "shared" / "data" / "dubai-aerial",
        help="Dubai source tree: the class maps of the auxiliary loss",
    )
