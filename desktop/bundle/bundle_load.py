"""`dockyard bundle load`: recreate a bundle's networks, volumes, images and containers on an engine.

Order: refuse before changing anything if a name is taken; then networks,
volumes, images (`POST /images/load`), each volume's files (put through a
created-never-started helper container that mounts the volume read-write at a
path no image uses, so a read-only mount or an image's own files there cannot
get in the way), the containers in dependency order, and last the start of
those that were running. Any failure removes what this load made, images
included, and the error says what failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.bundle.bundle_format import IMAGES_MEMBER, VOLUME_TOP, BundleReader
from desktop.bundle.bundle_spec import ProjectRename, engine_step
from runtime.errors import Conflict, InvalidArgument, RuntimeFailure

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)
FILL_DIR = "/.dockyard-bundle"
NETWORK_CREATE_FIELDS = ("Driver", "Internal", "Attachable", "EnableIPv6", "Options", "Labels", "IPAM")


@dataclass
class LoadSummary:
    """What the load made (the CLI reports it; a failed load undoes it)."""

    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)


def _taken(api: Any, manifest: dict[str, Any]) -> list[str]:
    import docker.errors

    taken = []
    with engine_step("checking names on the target engine"):
        networks = {n["Name"] for n in api.networks()}
        taken += [f"network {n['name']}" for n in manifest["networks"] if n["name"] in networks]
        volumes = {v["Name"] for v in api.volumes().get("Volumes") or []}
        taken += [f"volume {v['name']}" for v in manifest["volumes"] if v["name"] in volumes]
        for rec in manifest["containers"]:
            try:
                api.inspect_container(rec["name"])
                taken.append(f"container {rec['name']}")
            except docker.errors.NotFound:
                pass
    return taken


def _check_references(manifest: dict[str, Any]) -> None:
    """Refuse a manifest whose records are malformed or name what the bundle does not hold (a hand-edited one)."""
    try:
        _check_records(manifest)
    except (KeyError, TypeError, AttributeError) as err:
        raise InvalidArgument(f"the bundle's manifest is malformed ({type(err).__name__}: {err})") from None


def _check_records(manifest: dict[str, Any]) -> None:
    for kind in ("networks", "volumes"):
        for item in manifest[kind]:
            if not isinstance(item["name"], str) or not isinstance(item.get("member", ""), str):
                raise TypeError(f"a record of {kind} has no name")
    names = {rec["name"] for rec in manifest["containers"]}
    networks = {n["name"] for n in manifest["networks"]}
    for rec in manifest["containers"]:
        for key, expected in (("name", str), ("running", bool), ("config", dict), ("host_config", dict),
                              ("networks", dict), ("depends_on", list)):
            if not isinstance(rec[key], expected):
                raise TypeError(f"container field {key} is not a {expected.__name__}")
        for dep in rec["depends_on"]:
            if dep not in names:
                raise InvalidArgument(f"bundle container {rec['name']} depends on {dep}, which the bundle lacks")
        for net in rec["networks"]:
            if net not in networks:
                raise InvalidArgument(f"bundle container {rec['name']} is on network {net}, which the bundle lacks")


class _Loader:
    """One load: what it made so far, in order, so a failure can remove it."""

    def __init__(self, api: Any, reader: BundleReader) -> None:
        self.api, self.reader, self.manifest = api, reader, reader.manifest
        self.made = LoadSummary()
        self.helpers: list[str] = []
        self.added_tags: list[str] = []

    def run(self) -> LoadSummary:
        with engine_step("listing images"):
            before = _tags_by_image(self.api.images(all=True))
        for net in self.manifest["networks"]:
            body = {k: net[k] for k in NETWORK_CREATE_FIELDS if net.get(k) not in (None, {}, [])}
            with engine_step(f"creating network {net['name']}"):
                self.api.create_network(net["name"], driver=body.pop("Driver", None),
                                        options=body.get("Options"), ipam=body.get("IPAM"),
                                        internal=bool(body.get("Internal")), labels=body.get("Labels"),
                                        enable_ipv6=bool(body.get("EnableIPv6")),
                                        attachable=body.get("Attachable"))
            self.made.networks.append(net["name"])
        for vol in self.manifest["volumes"]:
            with engine_step(f"creating volume {vol['name']}"):
                self.api.create_volume(vol["name"], driver=vol.get("Driver") or "local",
                                       driver_opts=vol.get("DriverOpts") or None, labels=vol.get("Labels") or None)
            self.made.volumes.append(vol["name"])
        if self.manifest["images"] and not self._images_present():
            self._load_images()
        with engine_step("listing images"):
            after = _tags_by_image(self.api.images(all=True))
        self.made.images = [image_id for image_id in after if image_id not in before]
        # A bundle image that was here already may have got a name from the load: undo takes it back.
        # (Only for images that had a name: untagging a formerly nameless one would delete it.)
        self.added_tags = [tag for image_id, tags in after.items() if before.get(image_id)
                           for tag in sorted(tags - before[image_id])]
        for ref in self.manifest["images"]:
            with engine_step(f"finding image {ref} after loading the bundle's images"):
                self.api.inspect_image(ref)
        for vol in self.manifest["volumes"]:
            if vol.get("member"):
                self._fill_volume(vol)
        for rec in self.manifest["containers"]:
            self._create(rec)
        for rec in self.manifest["containers"]:
            if rec["running"]:
                with engine_step(f"starting container {rec['name']}"):
                    self.api.start(rec["name"])
                self.made.started.append(rec["name"])
        return self.made

    def _images_present(self) -> bool:
        """Whether every image is on the target already, under the same id (a teammate's second load)."""
        import docker.errors

        ids = self.manifest.get("image_ids")
        if not isinstance(ids, dict) or set(ids) != set(self.manifest["images"]):
            return False
        for ref, image_id in ids.items():
            with engine_step(f"inspecting image {ref}"):
                try:
                    if self.api.inspect_image(ref)["Id"] != image_id:
                        return False
                except docker.errors.NotFound:
                    return False
        log.info("the bundle's images are on the engine already")
        return True

    def _load_images(self) -> None:
        log.info("loading images %s", ", ".join(self.manifest["images"]))
        with engine_step("loading the bundle's images"):
            for message in self.api.load_image(self.reader.open_member(IMAGES_MEMBER)):
                if isinstance(message, dict) and (message.get("error") or message.get("errorDetail")):
                    detail = message.get("error") or message["errorDetail"].get("message")
                    raise RuntimeFailure(f"loading the bundle's images: {detail}")
                if isinstance(message, dict) and message.get("stream"):
                    log.info("%s", message["stream"].strip())

    def _fill_volume(self, vol: dict[str, Any]) -> None:
        image = vol.get("image") or self.manifest["images"][0]
        log.info("filling volume %s", vol["name"])
        with engine_step(f"filling volume {vol['name']}"):
            helper = self.api.create_container(
                image, command=["/dockyard-bundle-fill"], entrypoint=[], network_disabled=False,
                labels={"dockyard.bundle.helper": "1"},
                host_config=self.api.create_host_config(
                    binds=[f"{vol['name']}:{FILL_DIR}/{VOLUME_TOP}:rw"], network_mode="none"))["Id"]
            self.helpers.append(helper)
            if not self.api.put_archive(helper, FILL_DIR, self.reader.open_member(vol["member"])):
                raise RuntimeFailure(f"the engine refused the files of volume {vol['name']}")
            self.api.remove_container(helper, force=True)
            self.helpers.remove(helper)

    def _create(self, rec: dict[str, Any]) -> None:
        host = dict(rec["host_config"])
        mode = host.get("NetworkMode", "")
        endpoints = dict(rec["networks"])
        # The create request carries one network (API < 1.44 allows no more); the rest are connected after.
        first = mode if mode in endpoints else next(iter(endpoints), None)
        body = {**rec["config"], "HostConfig": host}
        if first is not None:
            body["NetworkingConfig"] = {"EndpointsConfig": {first: endpoints.pop(first)}}
        with engine_step(f"creating container {rec['name']}"):
            self.api.create_container_from_config(body, name=rec["name"])
        self.made.containers.append(rec["name"])
        for net, endpoint in endpoints.items():
            with engine_step(f"connecting container {rec['name']} to network {net}"):
                self.api.connect_container_to_network(
                    rec["name"], net, aliases=endpoint.get("Aliases"), links=endpoint.get("Links"),
                    ipv4_address=(endpoint.get("IPAMConfig") or {}).get("IPv4Address"),
                    ipv6_address=(endpoint.get("IPAMConfig") or {}).get("IPv6Address"),
                    driver_opt=endpoint.get("DriverOpts"))

    def undo(self) -> None:
        """Remove what this load made, newest first; each step tried even if one fails."""
        import docker.errors
        import requests.exceptions

        steps = ([(self.api.remove_container, (c,), {"force": True}) for c in self.helpers]
                 + [(self.api.remove_container, (c,), {"force": True}) for c in reversed(self.made.containers)]
                 + [(self.api.remove_image, (t,), {"force": False}) for t in self.added_tags]
                 + [(self.api.remove_image, (i,), {"force": False}) for i in self.made.images]
                 + [(self.api.remove_volume, (v,), {"force": True}) for v in reversed(self.made.volumes)]
                 + [(self.api.remove_network, (n,), {}) for n in reversed(self.made.networks)])
        for call, args, kwargs in steps:
            try:
                call(*args, **kwargs)
            except (docker.errors.APIError, requests.exceptions.RequestException) as err:
                log.warning("could not undo %s%s: %s", call.__name__, args, err)


def _tags_by_image(images: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Image id -> its names (`<none>:<none>` left out), from the engine's image list."""
    return {img["Id"]: {t for t in (img.get("RepoTags") or []) if t != "<none>:<none>"} for img in images}


def load_bundle(client: docker.DockerClient, path: Path, project: str | None = None) -> LoadSummary:
    """Recreate the bundle at `path` on the engine of `client`; `project` renames its compose project."""
    reader = BundleReader(path)
    try:
        manifest = reader.manifest
        _check_references(manifest)
        if project:
            if not manifest.get("project"):
                raise InvalidArgument("--project renames a compose project, and this bundle holds none "
                                      "(it was saved from named containers)")
            ProjectRename(manifest["project"], project).apply(manifest)
        taken = _taken(client.api, manifest)
        if taken:
            hint = " or load with --project NEWNAME" if manifest.get("project") else ""
            raise Conflict(f"names already taken on the target engine: {', '.join(taken)}; "
                           f"remove them{hint}")
        loader = _Loader(client.api, reader)
        try:
            return loader.run()
        except BaseException:
            loader.undo()
            raise
    finally:
        reader.close()
