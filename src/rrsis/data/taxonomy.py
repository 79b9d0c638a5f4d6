"""Class taxonomy used to turn semantic label maps into referring expressions.

A :class:`Taxonomy` maps class names to label ids, adds *inclusion* names that cover several
classes (RefSegRS's "vehicle" = car + van + truck + bus), synonyms, the classes whose
connected components are countable objects (they get size/shape attributes), the classes
whose colour is worth naming, the spatial relations worth stating, and optionally an RGB
colour table for colour-coded label PNGs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rrsis.data.geometry import RELATIONS
from rrsis.errors import DatasetError


@dataclass(frozen=True)
class Relation:
    """A relation template ``"<subject> <word> the <object>"``.

    ``word`` decides the geometry: ``in``/``on`` = the object surrounds the subject component,
    ``beside`` = touching, ``along`` = within a short distance, ``near`` = within a longer one.
    """

    subject: str
    word: str
    object: str

    def phrase(self, subject_name: str | None = None) -> str:
        return f"{subject_name or self.subject} {self.word} the {self.object}"


@dataclass
class Taxonomy:
    """Names <-> label ids plus the vocabulary the builder needs.

    Args:
        classes: class name -> label id (one id per name; ids not listed are ignored).
        groups: inclusion name -> member class names ("vehicle": ["car", "van", ...]).
        synonyms: name -> alternative phrasings picked at random ("low vegetation": ["grass"]).
        objects: names whose connected components are individual objects (size/shape attributes).
        colour_names: names whose components may be described by their image colour.
        relations: relation templates between names.
        palette: class name -> RGB colour of colour-coded label images (optional).
        ignore_ids: label ids meaning "unlabeled" (never referred to).
    """

    classes: dict[str, int]
    groups: dict[str, list[str]] = field(default_factory=dict)
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    objects: tuple[str, ...] = ()
    colour_names: tuple[str, ...] = ()
    relations: tuple[Relation, ...] = ()
    palette: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    ignore_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for group, members in self.groups.items():
            unknown = [m for m in members if m not in self.classes]
            if unknown:
                raise DatasetError(f"group {group!r} names unknown classes {unknown}")
        known = self.names()
        for rel in self.relations:
            if rel.word not in RELATIONS:
                raise DatasetError(f"relation word must be one of {RELATIONS}, got {rel.word!r}")
            for name in (rel.subject, rel.object):
                if name not in known:
                    raise DatasetError(f"relation {rel.phrase()!r} names unknown class {name!r}")

    def names(self) -> list[str]:
        """All referable names: classes first, then inclusion groups."""
        return list(self.classes) + [g for g in self.groups if g not in self.classes]

    def ids_for(self, name: str) -> tuple[int, ...]:
        """Label ids covered by a class or group name."""
        if name in self.classes:
            return (self.classes[name],)
        if name in self.groups:
            return tuple(sorted(self.classes[m] for m in self.groups[name]))
        raise KeyError(f"unknown class or group {name!r}")

    def mask(self, labels: np.ndarray, name: str) -> np.ndarray:
        """Boolean ``(H, W)`` mask of the pixels of ``name`` in an ``(H, W)`` label map."""
        return np.isin(labels, self.ids_for(name))

    def is_object(self, name: str) -> bool:
        return name in self.objects

    def labels_from_colours(self, rgb: np.ndarray) -> np.ndarray:
        """Exact-match a colour-coded ``(H, W, 3)`` label image to ``(H, W)`` int32 ids.

        Pixels whose colour is not in :attr:`palette` get ``-1`` (unlabeled).
        """
        if not self.palette:
            raise DatasetError("taxonomy has no colour palette for colour-coded labels")
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] < 3:
            raise DatasetError(f"colour labels must be (H, W, 3), got shape {rgb.shape}")
        # Pack RGB into one integer so the lookup is a single vectorised comparison per class.
        packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8)
        packed |= rgb[..., 2].astype(np.int32)
        out = np.full(packed.shape, -1, dtype=np.int32)
        for name, (r, g, b) in self.palette.items():
            out[packed == ((r << 16) | (g << 8) | b)] = self.classes[name]
        return out

    # --- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "classes": self.classes,
            "groups": self.groups,
            "synonyms": self.synonyms,
            "objects": list(self.objects),
            "colour_names": list(self.colour_names),
            "relations": [[r.subject, r.word, r.object] for r in self.relations],
            "palette": {k: list(v) for k, v in self.palette.items()},
            "ignore_ids": list(self.ignore_ids),
        }

    @classmethod
    def from_json(cls, data: dict, path: str | Path | None = None) -> Taxonomy:
        """Build from a dict shaped like :meth:`to_json` (only ``classes`` is required)."""
        if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
            raise DatasetError('taxonomy JSON needs a "classes" object of name -> id', path)
        try:
            return cls(
                classes={str(k): int(v) for k, v in data["classes"].items()},
                groups={str(k): list(v) for k, v in data.get("groups", {}).items()},
                synonyms={str(k): list(v) for k, v in data.get("synonyms", {}).items()},
                objects=tuple(data.get("objects", ())),
                colour_names=tuple(data.get("colour_names", ())),
                relations=tuple(Relation(*r) for r in data.get("relations", ())),
                palette={
                    str(k): tuple(int(c) for c in v) for k, v in data.get("palette", {}).items()
                },
                ignore_ids=tuple(int(i) for i in data.get("ignore_ids", ())),
            )
        except DatasetError as err:
            raise DatasetError(str(err), path) from None
        except (TypeError, ValueError) as err:
            raise DatasetError(f"malformed taxonomy: {err}", path) from None

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise DatasetError("taxonomy file not found", path) from None
        except json.JSONDecodeError as err:
            raise DatasetError(f"invalid JSON: {err.msg}", path, err.lineno) from None
        return cls.from_json(data, path)
