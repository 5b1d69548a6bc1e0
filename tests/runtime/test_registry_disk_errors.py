"""A pull whose disk fails mid-blob reports the disk's error, not a crash of the client."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import ResourceError
from runtime.images.reference import parse_reference
from runtime.images.registry_client import RegistryClient


def test_a_full_disk_during_a_blob_download_names_the_file(registry, test_images) -> None:
    client = RegistryClient()
    ref = parse_reference(test_images["busybox"])
    layer = client.resolve(ref).layers[0]
    # /dev/full fails every write(2) with ENOSPC: the first chunk (larger than the
    # file's buffer) is written through at once, inside the download loop.
    with pytest.raises(ResourceError, match="^write /dev/full: no space left on device$"):
        client.download_blob(ref, layer, Path("/dev/full"))
