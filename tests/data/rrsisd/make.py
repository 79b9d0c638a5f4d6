"""Write the tiny RRSIS-D fixture tree next to this script.

Layout as released (flat variant): ``refs(unc).p`` (pickled list of ref dicts),
``instances.json`` (COCO-like images / annotations / categories) and ``JPEGImages/``.
Annotations use all three segmentation encodings found in COCO-style files: compressed RLE
(``counts`` string), uncompressed RLE (``counts`` list) and polygons. Masks are built from
boxes so the expected masks are known exactly (see ``EXPECTED_BOXES``).

Run: ``python tests/data/rrsisd/make.py`` (deterministic; rewrites ``tree/``).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

HEIGHT, WIDTH = 40, 56
CATEGORIES = [
    {"id": 1, "name": "airplane"},
    {"id": 2, "name": "windmill"},
    {"id": 3, "name": "vehicle"},
]

# ann_id -> (image_id, category_id, box (row0, row1, col0, col1), encoding)
ANNOTATIONS = {
    101: (1, 1, (5, 15, 10, 30), "rle_str"),
    102: (2, 2, (20, 36, 4, 12), "rle_list"),
    103: (3, 3, (8, 20, 30, 50), "polygon"),
    104: (1, 3, (25, 30, 40, 48), "polygon"),
}
EXPECTED_BOXES = {ann_id: spec[2] for ann_id, spec in ANNOTATIONS.items()}

# ref_id, ann_id, split, sentences (sent_id, text)
REFS = [
    (11, 101, "train", [(1001, "the large airplane on the left"), (1002, "a white airplane")]),
    (12, 102, "train", [(1003, "The gray small windmill.")]),
    (13, 103, "val", [(1004, "the vehicle on the right")]),
    (14, 104, "test", [(1005, "the small vehicle at the bottom")]),
]


def _clean(text: str) -> str:
    """REFER's ``sent``: the ``raw`` sentence lowercased, without punctuation."""
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def _box_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    r0, r1, c0, c1 = box
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with a background run (the COCO convention)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [HEIGHT, WIDTH], "counts": counts}


def _segmentation(box: tuple[int, int, int, int], encoding: str):
    mask = _box_mask(box)
    if encoding == "rle_str":
        rle = mask_utils.encode(np.asfortranarray(mask))
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    if encoding == "rle_list":
        return _uncompressed_rle(mask)
    r0, r1, c0, c1 = box
    # Pixel-edge polygon of the box; COCO rasterises pixel centres inside the outline.
    return [[c0, r0, c1, r0, c1, r1, c0, r1]]


def make(root: Path) -> None:
    """Write the fixture tree under ``root`` (removed first)."""
    if root.exists():
        shutil.rmtree(root)
    (root / "JPEGImages").mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = []
    for image_id in (1, 2, 3):
        file_name = f"{image_id:05d}.jpg"
        pixels = rng.integers(40, 200, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / file_name, quality=90)
        images.append({"id": image_id, "file_name": file_name, "height": HEIGHT, "width": WIDTH})
    annotations = []
    for ann_id, (image_id, category_id, box, encoding) in ANNOTATIONS.items():
        r0, r1, c0, c1 = box
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": _segmentation(box, encoding),
                "area": (r1 - r0) * (c1 - c0),
                "bbox": [c0, r0, c1 - c0, r1 - r0],
                "iscrowd": 0,
            }
        )
    instances = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    refs = []
    for ref_id, ann_id, split, sentences in REFS:
        image_id, category_id = ANNOTATIONS[ann_id][:2]
        refs.append(
            {
                "ref_id": ref_id,
                "ann_id": ann_id,
                "image_id": image_id,
                "file_name": f"{image_id:05d}.jpg",
                "category_id": category_id,
                "split": split,
                "sent_ids": [sid for sid, _ in sentences],
                "sentences": [
                    {
                        "raw": text,
                        "sent": _clean(text),
                        "tokens": _clean(text).split(),
                        "sent_id": sid,
                    }
                    for sid, text in sentences
                ],
            }
        )
    with open(root / "refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=2)


if __name__ == "__main__":
    make(Path(__file__).resolve().parent / "tree")
