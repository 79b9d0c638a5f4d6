"""Procedural scenes: classes present, determinism, dataset writing split by scene."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rrsis.data.synthetic import (
    CLASSES,
    SYNTHETIC_TAXONOMY,
    build_synthetic_dataset,
    generate_scene,
)


def test_scene_has_the_paper_classes() -> None:
    image, labels = generate_scene(256, np.random.default_rng(0))
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert labels.shape == (256, 256)
    present = set(np.unique(labels).tolist())
    for name in ("road", "road marking", "sidewalk", "building", "tree", "low vegetation"):
        assert CLASSES[name] in present, name
    vehicles = {CLASSES[n] for n in ("car", "van", "truck", "bus")}
    assert present & vehicles
    # Rendering follows the labels: roads are darker than lane markings.
    assert image[labels == CLASSES["road"]].mean() < image[labels == CLASSES["road marking"]].mean()


def test_scenes_over_seeds_cover_every_class() -> None:
    seen: set[int] = set()
    rng = np.random.default_rng(1)
    for _ in range(6):
        seen |= set(np.unique(generate_scene(192, rng)[1]).tolist())
    assert seen == set(CLASSES.values())


def test_same_seed_same_scene_and_different_seed_differs() -> None:
    a = generate_scene(128, np.random.default_rng(5))
    b = generate_scene(128, np.random.default_rng(5))
    c = generate_scene(128, np.random.default_rng(6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_generation_speed_sanity() -> None:
    # Not a benchmark (2 shared cores): only catches an accidental per-pixel Python loop.
    start = time.perf_counter()
    generate_scene(512, np.random.default_rng(0))
    assert time.perf_counter() - start < 5.0


def test_too_small_scene_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        generate_scene(32, np.random.default_rng(0))


def test_dataset_is_written_and_split_by_scene(tmp_path) -> None:
    from rrsis.data.refsegrs import RefSegRS

    counts = build_synthetic_dataset(tmp_path / "synth", n=12, seed=0, size=96)
    total = sum(sum(c.values()) for c in counts.values())
    assert 12 <= total < 12 + 8
    sources: dict[str, set[str]] = {}
    n_read = 0
    # 12 triplets take two scenes: the first goes to train, the second to val.
    assert sum(counts["train"].values()) > 0 and sum(counts["val"].values()) > 0
    for split in [s for s, c in counts.items() if c]:
        ds = RefSegRS(tmp_path / "synth", split)
        n_read += len(ds)
        for i in range(len(ds)):
            sample = ds[i]
            assert sample["mask"].any()
            assert sample["meta"]["kind"] in ("category", "attribute", "relation", "position")
            sources.setdefault(sample["meta"]["source"], set()).add(split)
    assert n_read == total
    assert all(len(splits) == 1 for splits in sources.values())


def test_taxonomy_groups_cover_vehicles() -> None:
    assert set(SYNTHETIC_TAXONOMY.ids_for("vehicle")) == {
        CLASSES[n] for n in ("car", "van", "truck", "bus")
    }
    assert "bare ground" not in SYNTHETIC_TAXONOMY.names()
