"""`docker create`: validate a container's config, make its mounts and record it."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from ..containers import config as cc
from ..containers import device_rules, namespace_modes, volumes_from
from ..containers.mounts import MountRequest, parse_mounts
from ..containers.names import generate_name, validate_container_name
from ..containers.security.options import check_host_config as check_security_options
from ..errors import DockyardError, InvalidArgument
from ..images.store import Image
from ..linux import cgroup_lock_warmer
from ..models import Container
from ..timestamps import now_rfc3339
from ..volumes.store import check_volume_targets, populate_from_layers
from .container_context import ContainerContext
from .live import Live
from .networks import set_mac_address
from .processes import pure_cgroup_v2


class ContainerCreator:
    """Creates containers.

    Lock discipline: the name is reserved in the ContainerStore (its lock) before
    anything is written, and released if the create fails; the new `Live` enters the
    registry only once its record is on disk.
    """

    def __init__(self, ctx: ContainerContext) -> None:
        self._ctx = ctx

    def create(self, name: str | None, config: dict[str, Any], host_config: dict[str, Any],
               networking_config: dict[str, Any] | None = None) -> Container:
        """Raises NotFound("No such image: X") so the CLI pulls, Conflict on a taken name."""
        ctx = self._ctx
        cgroup_lock_warmer.warmer().kick()   # a start usually follows: see the module
        ctx.registry.await_recovery()   # names of recovered containers are taken
        config = dict(config or {})
        ref = config.get("Image") or ""
        if not ref:
            raise InvalidArgument("no image specified")
        cid = secrets.token_hex(32)
        # Pinned until the container is registered: an rmi meanwhile is refused (in use).
        with ctx.images.pinned(ref, cid) as image:
            return self._create(cid, name, ref, image, config, host_config, networking_config)

    def _create(self, cid: str, name: str | None, ref: str, image: Image, config: dict[str, Any],
                host_config: dict[str, Any], networking_config: dict[str, Any] | None) -> Container:
        ctx = self._ctx
        name = validate_container_name(name) if name else generate_name(ctx.store.name_taken)
        runtime_cfg = image.config.get("config") or {}
        cfg, hc = cc.build_config(cid, config, host_config or {}, runtime_cfg)
        check_security_options(hc, cc.capabilities(hc))
        self._check_sharing_and_devices(hc)
        set_mac_address(cfg, hc, networking_config)
        requests = volumes_from.merge(parse_mounts(cfg, hc),
                                      volumes_from.inherited_requests(
                                          hc.get("VolumesFrom"),
                                          lambda ref: ctx.registry.lookup(ref).c.mounts), hc)
        for m in requests:
            if m.type == "bind" and not m.create_source and not os.path.exists(m.source):
                raise InvalidArgument(f'invalid mount config for type "bind": '
                                      f"bind source path does not exist: {m.source}")
        ctx.networks.check_links(hc)
        volume_targets = [m.target for m in requests if m.type == "volume"]
        layers = ctx.images.layer_dirs(image) if volume_targets else []
        if volume_targets:
            check_volume_targets(layers, volume_targets)   # over a file or "/": refused now
        ctx.store.reserve_name(name, cid)
        created_volumes: list[str] = []
        try:
            ctx.networks.register(cid, name, hc, networking_config)
            cdir = ctx.store.dir(cid)
            cdir.mkdir(parents=True)
            mounts: list[dict[str, Any]] = []
            for m in requests:
                record = self._mount_record(m, created_volumes, hc)
                mounts.append(record)
                if m.type == "volume" and not m.nocopy and not os.listdir(record["Source"]):
                    populate_from_layers(layers, m.target, Path(record["Source"]))
            c = Container(id=cid, name=name, created=now_rfc3339(), image=ref, image_id=image.id,
                          config=cfg, host_config=hc, mounts=mounts,
                          log_path=str(cdir / f"{cid}-json.log") if cc.keeps_logs(hc) else "")
            # No state.json yet: a record without one is "created" (saves an fsync per run).
            ctx.store.save_config(c)
            live = Live(c)
        except BaseException:
            ctx.networks.forget(cid)
            ctx.store.release_name(name, cid)
            shutil.rmtree(ctx.store.dir(cid), ignore_errors=True)
            for vname in created_volumes:
                try:
                    ctx.volumes.store.remove(vname)
                except DockyardError:
                    pass
            raise
        ctx.registry.add(live)
        ctx.events.container(c, "create")
        return c

    def _check_sharing_and_devices(self, hc: dict[str, Any]) -> None:
        """--pid/--ipc/--cgroupns, --device and --device-cgroup-rule values, with dockerd's messages."""
        namespace_modes.validate(hc, self._ctx.donor, pure_cgroup_v2())
        if hc.get("Devices") is not None:
            hc["Devices"] = device_rules.validate_devices(hc["Devices"])
        if hc.get("DeviceCgroupRules") is not None:
            hc["DeviceCgroupRules"] = device_rules.validate_rules(hc["DeviceCgroupRules"])
        for entry in hc.get("VolumesFrom") or []:
            volumes_from.parse(entry)

    def _mount_record(self, m: MountRequest, created: list[str],
                      hc: dict[str, Any]) -> dict[str, Any]:
        """Docker's inspect "Mounts" entry; volumes are created now, as dockerd does."""
        if m.type == "volume":
            driver, options, labels = volume_options(hc, m.target)
            vol, new = self._ctx.volumes.created(m.source or None, driver, labels, options,
                                                 anonymous=not m.source)
            if new:
                created.append(vol.name)
            return {"Type": "volume", "Name": vol.name, "Source": vol.mountpoint,
                    "Destination": m.target, "Driver": "local", "Mode": "z" if not m.readonly else "ro",
                    "RW": not m.readonly, "Propagation": ""}
        if m.type == "bind":
            return {"Type": "bind", "Source": m.source, "Destination": m.target, "Mode": "",
                    "RW": not m.readonly, "Propagation": "rprivate"}
        return {"Type": "tmpfs", "Source": "", "Destination": m.target, "Mode": "",
                "RW": not m.readonly, "Propagation": ""}


def volume_options(hc: dict[str, Any], target: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(driver, driver options, labels) of `--mount type=volume,...` at `target`, for the
    volume it creates (volume-driver, volume-opt, volume-label); "local" and none otherwise."""
    for m in hc.get("Mounts") or []:
        if not isinstance(m, dict) or m.get("Type") != "volume":
            continue
        if os.path.normpath(str(m.get("Target") or "")) != target:
            continue
        vo = m.get("VolumeOptions") or {}
        driver_config = vo.get("DriverConfig") or {}
        return (str(driver_config.get("Name") or "local"),
                {str(k): str(v) for k, v in (driver_config.get("Options") or {}).items()},
                {str(k): str(v) for k, v in (vo.get("Labels") or {}).items()})
    return "local", {}, {}
