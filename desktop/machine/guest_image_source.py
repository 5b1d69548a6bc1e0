"""Which guest image a machine boots: one built from this Dockyard, or the one imported last.

The `image_source` setting decides, and the answer is always one image:

* `build`: the image of this tree's recipe (`vmimage.guest_image.ensure_image`),
  built when missing. Its recipe hash covers the Debian packages, the kernel
  version, our init and the guest's `runtime`/`guest_agent` code. When an
  imported image has the same hash, it is that image and nothing is built.
* `imported`: the image `dockyard machine image import` installed last
  (`imported.json` in the image cache), whatever its recipe.
* `auto` (the default): `build` when this host can build (Linux with apt,
  dpkg, mmdebstrap, fakeroot; a normal user also needs subordinate ids),
  else `imported`. The choice is logged with its reason, so `machine start`
  says which image it boots and why.

This module is portable: on macOS and Windows it only ever reads the cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import NotFound, RuntimeFailure

if TYPE_CHECKING:
    from vmimage.guest_image import GuestImage

log = logging.getLogger(__name__)

IMPORT_HINT = "import one with `dockyard machine image import FILE|URL --sha256 DIGEST`"


@dataclass(frozen=True)
class ImageChoice:
    """Where the image comes from: `kind` is "build" or "imported"; `reason` says why."""

    kind: str
    reason: str
    imported_hash: str = ""
    imported_from: str = ""


def choose(cache_dir: Path, source: str) -> ImageChoice:
    """Decide, without building anything, which image `image_source = source` means here."""
    from vmimage.build_host import local_build_blocker
    from vmimage.image_archive import imported_record

    record = imported_record(cache_dir)
    imported = ImageChoice("imported", "", record["recipe_hash"], record.get("source", "")) if record else None
    if source == "build":
        return ImageChoice("build", "image_source is build")
    if source == "imported":
        if imported is None:
            raise NotFound(f"image_source is imported, but no guest image was imported into {cache_dir}: "
                           f"{IMPORT_HINT}")
        return ImageChoice("imported", "image_source is imported", imported.imported_hash,
                           imported.imported_from)
    blocker = local_build_blocker()
    if blocker is None:
        return ImageChoice("build", "this host can build the guest image")
    if imported is None:
        raise RuntimeFailure(f"no guest image: this host cannot build one ({blocker}); {IMPORT_HINT}")
    return ImageChoice("imported", f"no local build is possible: {blocker}", imported.imported_hash,
                       imported.imported_from)


def describe(choice: ImageChoice) -> str:
    """One line for the user: which image and why."""
    if choice.kind == "build":
        return f"guest image: built from this Dockyard's recipe ({choice.reason})"
    return (f"guest image: the imported image {choice.imported_hash} from {choice.imported_from} "
            f"({choice.reason})")


def imported_guest_image(cache_dir: Path, recipe_hash: str) -> GuestImage:
    """The GuestImage of an image directory in the cache, its paths taken from where it is now."""
    from runtime.atomic_file import read_json
    from vmimage.guest_image import GuestImage

    directory = cache_dir / recipe_hash
    info = read_json(directory / "image.json", None)
    if not isinstance(info, dict):
        raise NotFound(f"guest image {recipe_hash} is not in {cache_dir}: {IMPORT_HINT}")
    image = GuestImage(kernel=directory / "vmlinuz", initrd=directory / "initrd.img",
                       rootfs=directory / "rootfs.img", cmdline=str(info.get("cmdline", "")),
                       recipe_hash=recipe_hash)
    for part in (image.kernel, image.initrd, image.rootfs):
        if not part.is_file():
            raise NotFound(f"guest image {recipe_hash} has no {part.name}: import it again")
    return image


def current_image(cache_dir: Path, source: str) -> GuestImage:
    """The image a machine boots now (building it first when the choice is to build)."""
    choice = choose(cache_dir, source)
    # Building is the usual case; booting an imported image is worth a line.
    log.log(logging.INFO if choice.kind == "imported" else logging.DEBUG, "%s", describe(choice))
    if choice.kind == "imported":
        return imported_guest_image(cache_dir, choice.imported_hash)
    try:
        from vmimage.guest_image import ensure_image
    except ImportError as err:
        raise RuntimeFailure(f"the guest image builder is not available: {err}") from err
    return ensure_image(cache_dir)
