"""`dockyard bundle save`: containers (named or a whole Compose project) into one bundle file.

Everything is read through the Docker Engine API, so the source may be Dockyard
or any Docker engine: container and network inspects, `GET /images/get` for the
images, `GET /containers/{id}/archive` for each named volume's files.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.bundle.bundle_format import (
    FORMAT,
    IMAGES_MEMBER,
    MANIFEST,
    VERSION,
    VOLUME_TOP,
    BundleWriter,
    volume_member,
)
from desktop.bundle.bundle_spec import (
    COMPOSE_PROJECT,
    PREDEFINED_NETWORKS,
    ContainerRefs,
    compose_start_order,
    container_record,
    dependency_order,
    engine_step,
)
from runtime.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)
CHUNK = 1 << 20
NETWORK_FIELDS = ("Driver", "Internal", "Attachable", "EnableIPv6", "Options", "Labels")


@dataclass
class SaveSummary:
    """What went into the bundle (for the CLI's one-line report)."""

    containers: int
    images: int
    volumes: int
    networks: int
    size: int


def _inspect_containers(api: Any, refs: list[str], project: str | None) -> list[dict[str, Any]]:
    if project:
        with engine_step(f"listing the containers of project {project}"):
            found = api.containers(all=True, filters={"label": f"{COMPOSE_PROJECT}={project}"})
        ids = [c["Id"] for c in found if (c.get("Labels") or {}).get("com.docker.compose.oneoff") != "True"]
        if not ids:
            raise NotFound(f"no container of compose project {project!r} on this engine")
    else:
        ids = refs
    infos = []
    import docker.errors

    for ref in ids:
        try:
            infos.append(api.inspect_container(ref))
        except docker.errors.NotFound:
            raise NotFound(f"no such container: {ref}") from None
    return infos


def _image_for(api: Any, info: dict[str, Any]) -> tuple[str, bool]:
    """The reference to recreate the container from (its Config.Image if that still names its image,
    else the id), and whether that image has an entrypoint."""
    ref = (info.get("Config") or {}).get("Image") or info["Image"]
    import docker.errors

    try:
        image = api.inspect_image(ref)
    except docker.errors.NotFound:
        image = {}
    if image.get("Id") != info["Image"]:
        log.warning("container %s: image %s has moved on; its own image is saved by id",
                    info["Name"].lstrip("/"), ref)
        ref = info["Image"]
        with engine_step(f"inspecting image {ref}"):
            image = api.inspect_image(ref)
    return str(ref), bool((image.get("Config") or {}).get("Entrypoint"))


def _network_record(api: Any, name: str, pinned: bool) -> dict[str, Any]:
    with engine_step(f"inspecting network {name}"):
        net = api.inspect_network(name)
    record = {"name": net["Name"], **{k: net[k] for k in NETWORK_FIELDS if net.get(k) not in (None, "", {}, [])}}
    ipam = net.get("IPAM") or {}
    # An engine shows the subnet it chose as if it were asked for; pinning it on the
    # target could clash with a network there, so it is kept only when a container has
    # a fixed address on it (which needs that subnet).
    if pinned and ipam.get("Config"):
        record["IPAM"] = {"Driver": ipam.get("Driver") or "default", "Config": ipam["Config"],
                          "Options": ipam.get("Options") or {}}
    return record


def _volume_sources(infos: list[dict[str, Any]]) -> dict[str, tuple[str, str, str]]:
    """{volume name: (container id, mount destination, image)} of the named volumes the containers mount."""
    sources: dict[str, tuple[str, str, str]] = {}
    for info in infos:
        for mount in info.get("Mounts") or []:
            if mount.get("Type") != "volume" or not mount.get("Name"):
                continue
            if len(mount["Name"]) == 64 and all(c in "0123456789abcdef" for c in mount["Name"]):
                log.warning("container %s: anonymous volume at %s is not saved (name it to keep its files)",
                            info["Name"].lstrip("/"), mount["Destination"])
                continue
            # A read-write mount first: any mount reads, but one is enough.
            if mount["Name"] not in sources or mount.get("RW"):
                sources[mount["Name"]] = (info["Id"], mount["Destination"], info["Image"])
        for mount in info.get("Mounts") or []:
            if mount.get("Type") == "bind":
                log.warning("container %s: bind mount %s -> %s is kept as a host path; its files are not in "
                            "the bundle", info["Name"].lstrip("/"), mount.get("Source"), mount["Destination"])
    return sources


def _renamed_volume_tar(api: Any, cid: str, destination: str, sink: Any) -> None:
    """The archive of `destination` in container `cid`, its top directory renamed to `volume`, into `sink`."""
    with engine_step(f"reading {destination} of container {cid[:12]}"):
        stream, _ = api.get_archive(cid, destination, chunk_size=CHUNK)
        source = _ChunkReader(stream)
        top = posixpath.basename(destination.rstrip("/")) or "/"
        with tarfile.open(fileobj=source, mode="r|") as src, \
                tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out:
            for member in src:
                member.name = _rename_top(member.name, top)
                if member.islnk():
                    member.linkname = _rename_top(member.linkname, top)
                out.addfile(member, src.extractfile(member) if member.isreg() else None)


def _rename_top(name: str, top: str) -> str:
    first, sep, rest = name.strip("/").partition("/")
    if first != top:
        raise InvalidArgument(f"the engine's archive of a volume holds {name!r} outside {top!r}")
    return VOLUME_TOP + sep + rest


class _ChunkReader(io.RawIOBase):
    """A read()-able view of docker-py's chunk iterator, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self.chunks = iter(chunks)
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        if size < 0:
            data, self.buffer = self.buffer, b""
        else:
            data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _images_stream(api: Any, names: list[str]) -> Iterator[bytes]:
    url = f"{api.base_url}/v{api.api_version}/images/get"
    with engine_step("saving the images"):
        response = api.get(url, params={"names": names}, stream=True, timeout=None)
        if response.status_code != 200:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise InvalidArgument(f"the engine refused to save the images: {message.strip()}")
        yield from response.iter_content(CHUNK)


def plan(api: Any, refs: list[str], project: str | None) -> tuple[dict[str, Any], dict[str, tuple[str, str, str]]]:
    """The manifest of a bundle of these containers, and where each volume's files are read from."""
    if bool(refs) == bool(project):
        raise InvalidArgument("name the containers to save, or --project NAME, not both")
    infos = _inspect_containers(api, refs, project)
    container_refs = ContainerRefs(infos)
    with engine_step("listing networks"):
        all_networks = api.networks()
    network_names = {n["Id"]: n["Name"] for n in all_networks}
    found = {info["Id"]: _image_for(api, info) for info in infos}
    images = {cid: ref for cid, (ref, _) in found.items()}
    records = [container_record(info, container_refs, images[info["Id"]], network_names,
                                image_has_entrypoint=found[info["Id"]][1]) for info in infos]
    compose_start_order(records)
    records = dependency_order(records)
    wanted_networks = {net for rec in records for net in rec["networks"]}
    if project:
        wanted_networks |= {n["Name"] for n in all_networks
                            if (n.get("Labels") or {}).get(COMPOSE_PROJECT) == project}
    pinned = {net for rec in records for net, ep in rec["networks"].items() if ep.get("IPAMConfig")}
    networks = [_network_record(api, name, name in pinned)
                for name in sorted(wanted_networks - PREDEFINED_NETWORKS)]
    sources = _volume_sources(infos)
    if project:
        with engine_step("listing volumes"):
            project_volumes = api.volumes(filters={"label": f"{COMPOSE_PROJECT}={project}"}).get("Volumes") or []
        for vol in project_volumes:
            if vol["Name"] not in sources:
                log.warning("volume %s is mounted by no container of the project: created empty on load",
                            vol["Name"])
                sources.setdefault(vol["Name"], ("", "", ""))
    volumes = []
    for index, name in enumerate(sorted(sources)):
        with engine_step(f"inspecting volume {name}"):
            vol = api.inspect_volume(name)
        volumes.append({"name": name, "Driver": vol.get("Driver") or "local",
                        "DriverOpts": vol.get("Options") or {}, "Labels": vol.get("Labels") or {},
                        "member": volume_member(index) if sources[name][0] else "",
                        "image": images.get(sources[name][0], "")})
    manifest = {"format": FORMAT, "version": VERSION, "project": project or "",
                "images": sorted(set(images.values())),
                "image_ids": {images[info["Id"]]: info["Image"] for info in infos},
                "networks": networks, "volumes": volumes,
                "containers": records}
    return manifest, sources


def save_bundle(client: docker.DockerClient, output: Path, refs: list[str], project: str | None) -> SaveSummary:
    """Write the bundle of `refs` (container names or ids) or of compose `project` to `output`, atomically."""
    api = client.api
    manifest, sources = plan(api, refs, project)
    output = Path(output)
    if not output.parent.is_dir():
        raise NotFound(f"no such directory: {output.parent}")
    writer = BundleWriter(output)
    try:
        writer.add_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        if manifest["images"]:
            log.info("saving images %s", ", ".join(manifest["images"]))
            writer.add_stream(IMAGES_MEMBER, _images_stream(api, manifest["images"]))
        for vol in manifest["volumes"]:
            if vol["member"]:
                cid, destination, _ = sources[vol["name"]]
                log.info("saving volume %s (through %s of %s)", vol["name"], destination, cid[:12])
                sink = writer.member_file(vol["member"])
                _renamed_volume_tar(api, cid, destination, sink)
                sink.close()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return SaveSummary(len(manifest["containers"]), len(manifest["images"]), len(manifest["volumes"]),
                       len(manifest["networks"]), output.stat().st_size)
