"""`docker rmi IMAGE` racing `docker create IMAGE`: never a container whose image is gone."""

from __future__ import annotations

import threading

from runtime.engine.facade import Engine
from runtime.errors import Conflict, NotFound
from runtime.models import Container

ROUNDS = 5


def test_rmi_while_a_create_is_in_flight_is_refused(engine, busybox):
    """The rmi is sent at a fixed point inside the create: once the create resolved the image
    and created the container's anonymous volume (its "volume create" event), before the
    container is registered. It must be refused (the image is in use), and the container
    created keeps its image."""
    for _ in range(ROUNDS):
        _rmi_at_the_volume_create(engine, busybox)


def test_rmi_racing_create_never_leaves_a_container_without_its_image(engine, busybox):
    """Free-running threads: either the rmi is refused or the create says "No such image"."""
    for _ in range(ROUNDS):
        _rmi_racing_create(engine, busybox)


def _rmi_at_the_volume_create(engine: Engine, busybox: str) -> None:
    """One round of the first test (its own function, so the threads close over this round's values)."""
    engine.images.pull(busybox)
    events = engine.events.subscribe(filters={"type": ["volume"], "event": ["create"]})
    result: dict[str, object] = {}

    def rmi_mid_create() -> None:
        for _event in events:
            break
        try:
            engine.images.remove(busybox)
            result["rmi"] = "removed"
        except Conflict:
            result["rmi"] = "in use"

    remover = threading.Thread(target=rmi_mid_create)
    remover.start()
    try:
        c = engine.containers.create(None, {"Image": busybox, "Cmd": ["true"],
                                            "Volumes": {"/bin": {}}}, {"NetworkMode": "none"})
    finally:
        remover.join(60)
        events.close()
    assert result == {"rmi": "in use"}
    assert engine.images.get(c.image_id).id == c.image_id, "a container outlived its image"
    engine.containers.remove(c.id, remove_volumes=True)
    engine.images.remove(busybox)


def _rmi_racing_create(engine: Engine, busybox: str) -> None:
    """One round of the second test."""
    engine.images.pull(busybox)
    barrier = threading.Barrier(2)
    result: dict[str, object] = {}

    def create() -> None:
        barrier.wait()
        try:
            result["create"] = engine.containers.create(
                None, {"Image": busybox, "Cmd": ["true"]}, {"NetworkMode": "none"})
        except NotFound as err:
            result["create"] = str(err)

    def rmi() -> None:
        barrier.wait()
        try:
            engine.images.remove(busybox)
            result["rmi"] = "removed"
        except Conflict:
            result["rmi"] = "in use"

    threads = [threading.Thread(target=create), threading.Thread(target=rmi)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    created = result["create"]
    if isinstance(created, str):
        assert "No such image" in created and result["rmi"] == "removed"
        return
    assert isinstance(created, Container)
    assert result["rmi"] == "in use"
    assert engine.images.get(created.image_id).id == created.image_id, "a container outlived its image"
    engine.containers.remove(created.id)
    engine.images.remove(busybox)
