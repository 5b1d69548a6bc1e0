"""`docker import`: a root file system tar (plain or compressed, from the request or a URL)
becomes a one-layer image, as dockerd's ImportImage makes it.

The config is an empty container config with the `changes` applied (no merge with
anything: there is no container), the history one entry carrying the message
("Imported from <source>" by default), and the layer's diff id the digest of the
decompressed tar, so the same tar imported here and into dockerd has the same layer. The
tar is spooled to a temp file first and unpacked as pulls unpack layers: a corrupt or
escaping one is refused (InvalidArchive) and leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import InvalidArgument, RegistryError
from ..images.image_authoring import Readable
from ..images.reference import parse_reference
from ..images.store import Image
from ..timestamps import now_rfc3339
from ..version import SERVER_VERSION
from .image_changes import apply_changes, go_container_config, history_entry

if TYPE_CHECKING:
    from .images import ImageService

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
URL_TIMEOUT = 60.0


def go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def import_target(repo: str, tag: str) -> str:
    """dockerd's repository + tag for an import: "" for none; digests refused."""
    if not repo:
        return ""
    ref = parse_reference(f"{repo}:{tag}" if tag else repo)
    if ref.digest:
        raise InvalidArgument("cannot import digest reference")
    return ref.familiar()


def check_platform(value: str) -> None:
    """The `platform` parameter: ours or nothing (a one-arch engine imports for itself)."""
    if not value:
        return
    os_name, _, arch = value.partition("/")
    if os_name.lower() != "linux" or (arch and arch.split("/")[0] != go_arch()):
        raise InvalidArgument(f"importing for platform {value!r} is not supported: this engine "
                              f"runs linux/{go_arch()} only")


def import_image(images: ImageService, source: Readable | str, repo: str = "", tag: str = "",
                 message: str = "", changes: list[str] | None = None) -> Image:
    """Import the tar read from `source` (a stream, or an http(s) URL to download)."""
    target = import_target(repo, tag)
    # Checked before a byte of the (possibly huge) tar is stored.
    config = go_container_config(apply_changes(go_container_config({}), changes or []))
    where = source if isinstance(source, str) else "-"
    tmp = images.store.blobs.new_temp()
    try:
        with open(tmp, "wb") as out:
            if isinstance(source, str):
                _download(source, out)
            else:
                shutil.copyfileobj(source, out, _CHUNK)
        layer = images.register_layer(Path(tmp), "")
    finally:
        tmp.unlink(missing_ok=True)
    now = now_rfc3339()
    comment = message or f"Imported from {where}"
    image_config: dict[str, Any] = {
        "architecture": go_arch(),
        "comment": comment,
        "config": config,
        "container_config": go_container_config({}),
        "created": now,
        "docker_version": SERVER_VERSION,
        "history": [history_entry(now, "", comment=comment)],
        "os": "linux",
    }
    image = images.create_image(image_config, [layer.chain_id], [target] if target else [])
    images.publish("import", image.id)
    return image


def _download(url: str, out: BinaryIO) -> None:
    """GET `url` into `out` (dockerd prefixes "http://" to a URL without a scheme)."""
    import urllib.error
    import urllib.request
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"importing from {url!r} is not supported: only http and https URLs")
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as resp:   # noqa: S310  # scheme checked above
            shutil.copyfileobj(resp, out, _CHUNK)
    except urllib.error.HTTPError as err:
        raise RegistryError(f"Get {url}: {err.code} {err.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise RegistryError(f"Get {url}: {reason}") from None
    finally:
        out.flush()
    os.fsync(out.fileno())
