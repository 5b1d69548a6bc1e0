"""`dockyard machine image export|import`: the guest image as one file that travels.

`export FILE` writes the image machines boot here (the guest_image setting's,
else see desktop.machine.guest_image_source) and prints the file's SHA-256;
`import FILE|URL --sha256 DIGEST` checks and installs such a file into the
image cache. The format and its checks are vmimage.image_archive's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(image_sub: argparse._SubParsersAction) -> None:
    """The export and import subcommands of `dockyard machine image`."""
    export = image_sub.add_parser("export", help="write the guest image to one compressed file")
    export.add_argument("file", type=Path, help="the file to write (an xz-compressed tar)")
    export.set_defaults(handler=cmd_image_export)
    imported = image_sub.add_parser("import", help="check and install a guest image file into the image cache")
    imported.add_argument("source", metavar="FILE|URL", help="an exported image: a path or an http(s) URL")
    imported.add_argument("--sha256", required=True, metavar="DIGEST",
                          help="the file's SHA-256, as `image export` printed it")
    imported.set_defaults(handler=cmd_image_import)


def _settings_and_cache() -> tuple[str, Path]:
    from desktop import paths, settings

    return settings.load().image_source, paths.image_cache_dir()


def cmd_image_export(args: argparse.Namespace) -> int:
    from desktop.machine.manager import ensure_guest_image
    from runtime.errors import InvalidArgument
    from vmimage.image_archive import export_image

    if not args.file.parent.resolve().is_dir():
        raise InvalidArgument(f"cannot write {args.file}: {args.file.parent} is not a folder")
    # The image `machine start` would boot (built first if that is the choice).
    image = ensure_guest_image()
    digest = export_image(Path(image.kernel).parent, args.file)
    print(f"{digest}  {args.file}")
    print(f"guest image {image.recipe_hash} exported; install it elsewhere with:\n"
          f"  dockyard machine image import {args.file} --sha256 {digest}", file=sys.stderr)
    return 0


def cmd_image_import(args: argparse.Namespace) -> int:
    from desktop.machine.guest_image_source import choose
    from vmimage.image_archive import import_image

    source, cache = _settings_and_cache()
    installed = import_image(args.source, args.sha256, cache)
    state = "was already in the cache" if installed.already_present else "installed"
    print(f"guest image {installed.recipe_hash} {state} ({installed.directory})", file=sys.stderr)
    if choose(cache, source).kind == "build":
        print("note: this host builds its own guest image, so machines boot the imported one only when its "
              "recipe is this Dockyard's, or with the setting image_source = imported "
              "(DOCKYARD_IMAGE_SOURCE=imported)", file=sys.stderr)
    return 0


def note_for_init() -> str:
    """The line `machine init` prints about the image the machine will boot.

    Raises when there is none: no local build is possible and nothing was imported.
    """
    from desktop import settings
    from desktop.machine.guest_image_source import choose, describe

    current = settings.load()
    if current.guest_image:
        return f"guest image: {current.guest_image} (the guest_image setting)"
    source, cache = _settings_and_cache()
    return describe(choose(cache, source))
