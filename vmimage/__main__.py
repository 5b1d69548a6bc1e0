"""`python -m vmimage build [--force] [--cache-dir DIR]`: build the guest image, print its paths."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from runtime.errors import DockyardError

from .guest_image import ensure_image


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m vmimage")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the guest image if missing or outdated")
    build.add_argument("--force", action="store_true", help="rebuild every part")
    build.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    try:
        image = ensure_image(args.cache_dir, force=args.force)
    except DockyardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"kernel": str(image.kernel), "initrd": str(image.initrd),
                      "rootfs": str(image.rootfs), "cmdline": image.cmdline,
                      "recipe_hash": image.recipe_hash,
                      "seconds": round(time.monotonic() - started, 2)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
