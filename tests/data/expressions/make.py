"""Draw the real RRSIS-D expressions of ``rrsisd_parses.tsv`` (not run by the tests).

Source: RRSIS-D (Liu et al., "Rotated multi-scale interaction network for referring remote
sensing image segmentation", CVPR 2024), refs file ``rrsisd-mask/refs(unc)-50-all.p`` of the
public repository https://github.com/AHideoKuzeA/LRB-WREL (17,402 refs, one sentence each).

    python tests/data/expressions/make.py "path/to/refs(unc)-50-all.p"

draws 150 expressions, seeded, in equal shares across the kinds of
:func:`rrsis.data.vocabulary.infer_kind` (distinct sentences only), adds the misreadings that
issue 24 names (:data:`NAMED`), and writes them to
``rrsisd_parses.tsv`` next to this script. The columns ``rule subject value object`` are the
expected parse, labelled by hand: ``network`` (the rules leave the expression to the network,
the other columns empty) or ``position``/``relation``/``attribute`` with what the network is
asked to segment, the region/relation/attribute, and the relation's other class. Labels of
expressions already in the file are kept; new ones are written as ``?`` to be labelled.
"""

from __future__ import annotations

import argparse
import builtins
import csv
import pickle
from pathlib import Path

import numpy as np

from rrsis.data.vocabulary import KINDS, infer_kind

HERE = Path(__file__).resolve().parent
OUT = HERE / "rrsisd_parses.tsv"
COLUMNS = ("ref_id", "split", "expression", "rule", "subject", "value", "object")
N = 150
SEED = 24
#: Sentences a former parser misread, kept in the set by name.
NAMED = (
    "The blue and gray windmill",
    "The bridge is on the upper left of the large green golf field",
)


class _Refs(pickle.Unpickler):
    """Unpickle plain containers only: a refs file has no business holding anything else."""

    def find_class(self, module: str, name: str) -> type:
        if module == "builtins" and name in {"list", "dict", "tuple", "set", "str", "int", "float"}:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refs file holds a {module}.{name}; refusing to load it")


def draw(refs: list[dict], n: int = N, seed: int = SEED) -> list[tuple[int, str, str]]:
    """``(ref_id, split, sentence)`` of ``n`` distinct sentences, equal shares per kind."""
    by_kind: dict[str, dict[str, tuple[int, str, str]]] = {k: {} for k in KINDS}
    for ref in refs:
        for sentence in ref["sentences"]:
            text = " ".join(str(sentence["sent"]).split())
            by_kind[infer_kind(text)].setdefault(text, (int(ref["ref_id"]), ref["split"], text))
    rng = np.random.default_rng(seed)
    present = [k for k in KINDS if by_kind[k]]
    chosen: list[tuple[int, str, str]] = []
    for i, kind in enumerate(present):
        pool = sorted(by_kind[kind].values())
        share = (n - len(chosen)) // (len(present) - i)
        picks = rng.choice(len(pool), size=min(share, len(pool)), replace=False)
        chosen += [pool[int(j)] for j in sorted(picks)]
    taken = {text for _, _, text in chosen}
    for text in NAMED:
        found = [by_kind[k][text] for k in KINDS if text in by_kind[k]]
        if found and text not in taken:
            chosen.append(found[0])
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("refs", type=Path, help="path to refs(unc)-50-all.p")
    args = parser.parse_args()
    with args.refs.open("rb") as f:
        refs = _Refs(f).load()
    labels: dict[str, dict[str, str]] = {}
    if OUT.exists():
        with OUT.open(newline="") as f:
            labels = {row["expression"]: row for row in csv.DictReader(f, delimiter="\t")}
    with OUT.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for ref_id, split, text in draw(refs):
            old = labels.get(text, {})
            label = [old.get(c, "?") for c in COLUMNS[3:]]
            writer.writerow([ref_id, split, text, *label])


if __name__ == "__main__":
    main()
