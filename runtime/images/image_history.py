"""`docker history`: an image's history entries as dockerd lists them.

One row per config history entry, newest first, each with the size of its layer (0 for an
empty_layer entry). The first row carries the image's id and tags; as dockerd, the rows
below carry the ids and tags of the local images this one was made from (commit and build
record a parent), as far as that chain goes; the rest are "<missing>".
"""

from __future__ import annotations

from typing import Any

from ..timestamps import unix_seconds
from .index import ImageIndex
from .layer_store import LayerStore


def history_rows(index: ImageIndex, layers: LayerStore, image_id: str) -> list[dict[str, Any]]:
    """The rows for image `image_id` (in the index; the caller holds the store's lock)."""
    record = index.images[image_id]
    sizes = [layers.get(c).size for c in record.chain_ids]
    entries = record.config.get("history") or []
    out: list[dict[str, Any]] = []
    layer = 0
    if entries:
        for h in entries:
            size = 0
            if not h.get("empty_layer"):
                size = sizes[layer] if layer < len(sizes) else 0
                layer += 1
            out.append({"Id": "<missing>", "Created": unix_seconds(h.get("created", "")),
                        "CreatedBy": h.get("created_by", ""), "Tags": None, "Size": size,
                        "Comment": h.get("comment", "")})
    else:
        created = unix_seconds(str(record.config.get("created", "")))
        out = [{"Id": "<missing>", "Created": created, "CreatedBy": "", "Tags": None,
                "Size": s, "Comment": ""} for s in sizes]
    out.reverse()
    current: str = image_id
    for row in out:
        row["Id"] = current
        row["Tags"] = [r for r in index.refs_of(current) if "@" not in r] or None
        parent = index.images[current].parent
        if not parent or parent not in index.images:
            break
        current = parent
    return out
