"""ImageStore against the real test registry: pull, layers on disk, names, removal, recovery."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from runtime.errors import Conflict, NotFound, RegistryError, RegistryNotFound
from runtime.images.layer_unpack import OPAQUE_XATTR
from runtime.images.store import ImageStore
from tests.support import test_images as ti
from tests.support.registry import FaultyProxy


def statuses(messages: list[dict]) -> list[str]:
    return [m["status"] for m in messages]


def test_pull_busybox_progress_and_layers(registry, test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    ref = test_images["busybox"]
    messages: list[dict] = []
    image = store.pull(ref, progress=messages.append)

    assert messages[0] == {"status": "Pulling from busybox", "id": "latest"}
    layer_msgs = [m for m in messages if "id" in m and m["id"] != "latest"]
    assert [m["status"] for m in layer_msgs][0] == "Pulling fs layer"
    downloading = [m for m in layer_msgs if m["status"] == "Downloading"]
    assert downloading and downloading[-1]["progressDetail"]["current"] == downloading[-1]["progressDetail"]["total"]
    for status in ("Download complete", "Extracting", "Pull complete"):
        assert status in statuses(layer_msgs)
    assert messages[-2]["status"].startswith("Digest: sha256:")
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {ref}"}

    assert image.repo_tags == [ref]
    assert image.repo_digests == [f"{registry.host}/busybox@{messages[-2]['status'][8:]}"]
    assert image.config["config"]["Cmd"] == ["sh"]
    assert image.size > 1_000_000
    (layer,) = store.layer_dirs(image)
    assert os.access(layer / "bin/busybox", os.X_OK)
    assert os.readlink(layer / "bin/sh") == "busybox"
    assert stat.S_IMODE(os.stat(layer / "tmp").st_mode) == 0o1777
    assert os.stat(layer / "home/app").st_uid == 1000

    (link,) = store.short_layer_links(image)
    assert link.startswith("l/") and len(link) == 2 + 26
    assert os.path.realpath(store.layers_root / link) == str(layer)

    again: list[dict] = []
    assert store.pull(ref, progress=again.append).id == image.id
    assert statuses(again) == ["Pulling from busybox", f"Digest: {messages[-2]['status'][8:]}",
                               f"Status: Image is up to date for {ref}"]


def test_layered_image_whiteouts_and_shared_base(test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    busybox = store.pull(test_images["busybox"])
    messages: list[dict] = []
    layered = store.pull(test_images["layered"], progress=messages.append)
    assert statuses(messages).count("Already exists") == 1      # the busybox layer is shared
    assert statuses(messages).count("Pull complete") == 2
    dirs = store.layer_dirs(layered)
    assert len(dirs) == 3 and dirs[0] == store.layer_dirs(busybox)[0]
    l2, l3 = dirs[1], dirs[2]
    assert (l2 / ti.LAYERED_DELETED).read_text() == "to be deleted\n"
    assert (l2 / ti.LAYERED_OPAQUE_OLD).exists()
    for whiteout in (ti.LAYERED_DELETED, ti.LAYERED_DELETED_MOTD):
        st = os.lstat(l3 / whiteout)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(l3 / ti.LAYERED_OPAQUE_DIR, OPAQUE_XATTR) == b"y"
    assert (l3 / ti.LAYERED_OPAQUE_NEW).read_text() == "new\n"
    assert (l3 / ti.LAYERED_CHANGED).read_text() == "v2\n"
    assert not any(p.name.startswith(".wh.") for p in l3.rglob("*"))
    history = store.history(test_images["layered"])
    assert [h["Id"] for h in history] == [layered.id, "<missing>", "<missing>"]
    assert history[0]["Tags"] == [test_images["layered"]]
    assert history[0]["CreatedBy"].startswith("RUN rm") and history[-1]["Size"] == busybox.size
    assert all(h["Created"] == 1_700_000_000 for h in history)


def test_pull_debian(test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image = store.pull(test_images["debian"])
    assert image.config["config"]["Cmd"] == ["bash"]
    assert image.size > 50_000_000
    (layer,) = store.layer_dirs(image)
    assert os.access(layer / "usr/bin/bash", os.X_OK)
    assert (layer / "etc/debian_version").read_text().startswith("12")
    assert not any(stat.S_ISCHR(os.lstat(p).st_mode) for p in (layer / "dev").iterdir())
    assert list((tmp_path / "store/tmp").iterdir()) == []    # the layer blob is not kept


def test_get_by_every_kind_of_name(registry, test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image = store.pull(test_images["busybox"])
    other = store.pull(test_images["layered"])
    hexid = image.id[7:]
    prefix = next(hexid[:n] for n in range(1, 65) if not other.id[7:].startswith(hexid[:n]))
    for name in (test_images["busybox"], f"{registry.host}/busybox", image.repo_digests[0],
                 image.id, hexid, f"sha256:{hexid[:10]}", hexid[:12], prefix):
        assert store.get(name).id == image.id, name
    for missing in ("busybox", f"{registry.host}/busybox:nope", "sha256:" + "0" * 64,
                    "zzz", "f" * 64):
        with pytest.raises(NotFound, match="No such image"):
            store.get(missing)
    assert {i.id for i in store.list()} == {image.id, other.id}


def test_tag_and_remove_semantics(test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    ref = test_images["busybox"]
    image = store.pull(ref)
    store.tag(ref, "mytest/bb", "v1")
    assert store.get("mytest/bb:v1").id == image.id
    assert sorted(store.get(image.id).repo_tags) == sorted([ref, "mytest/bb:v1"])

    # One of several names: only untag.
    assert store.remove("mytest/bb:v1") == [{"Untagged": "mytest/bb:v1"}]
    assert store.get(ref).id == image.id

    # By id with two tags: must force.
    store.tag(image.id, "mytest/bb", "v2")
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        store.remove(image.id[7:19])
    records = store.remove(image.id[7:19], force=True)
    assert {"Untagged": "mytest/bb:v2"} in records and {"Untagged": ref} in records
    assert {"Deleted": image.id} in records
    assert records[-1]["Deleted"].startswith("sha256:")        # the layer went too
    with pytest.raises(NotFound):
        store.get(image.id)
    assert store.layers.all_chain_ids() == set()


def test_remove_in_use_image(test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    ref = test_images["busybox"]
    image = store.pull(ref)
    container = "c0ffee" * 10 + "abcd"

    def users(image_id: str) -> list[str]:
        return [container] if image_id == image.id else []

    with pytest.raises(Conflict) as err:
        store.remove(ref, in_use_by=users)
    assert str(err.value) == (f'conflict: unable to remove repository reference "{ref}" (must force) '
                              f"- container {container[:12]} is using its referenced image {image.id[7:19]}")
    with pytest.raises(Conflict, match="cannot be forced"):
        store.remove(image.id, force=True, in_use_by=users, is_running=lambda c: True)
    # Forced removal of the last name while a container runs: untagged only (dockerd does the same).
    records = store.remove(ref, force=True, in_use_by=users, is_running=lambda c: True)
    assert {"Untagged": ref} in records and not any("Deleted" in r for r in records)
    dangling = store.get(image.id)
    assert dangling.repo_tags == []
    # prune keeps images in use, then removes them once free.
    assert store.prune(in_use={image.id}) == ([], 0)
    records, reclaimed = store.prune()
    assert {"Deleted": image.id} in records and reclaimed == image.size
    assert store.layers.all_chain_ids() == set()


def test_forced_remove_keeps_layers_for_a_stopped_container(test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image = store.pull(test_images["busybox"])
    layers = store.layer_dirs(image)
    records = store.remove(test_images["busybox"], force=True, in_use_by=lambda i: ["f" * 64])
    assert records[0] == {"Untagged": test_images["busybox"]}
    assert records[-1] == {"Deleted": image.id}               # the image goes, like dockerd's rmi -f
    assert all(d.is_dir() for d in layers)                   # but its container keeps its layers


def test_prune_all_unused(test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    busybox = store.pull(test_images["busybox"])
    layered = store.pull(test_images["layered"])
    assert store.prune() == ([], 0)                          # nothing dangling
    records, reclaimed = store.prune(dangling_only=False, in_use={busybox.id})
    assert {"Deleted": layered.id} in records
    assert reclaimed == layered.size - busybox.size         # the shared base layer stays
    assert store.get(busybox.id).id == busybox.id
    assert store.layer_dirs(busybox)[0].is_dir()


def test_state_survives_restart_and_crash_debris_is_removed(test_images, tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ImageStore(root)
    image = store.pull(test_images["busybox"])
    store.tag(image.id, "again", "x")
    # Debris of a crash mid-pull: a half-unpacked layer, a half-downloaded blob,
    # and a layer directory whose record was never written.
    (root / "layers/.tmp-deadbeef-1234/bin").mkdir(parents=True)
    (root / "tmp/blob-partial").write_bytes(b"half")
    (root / "layers" / ("ab" * 32) / "etc").mkdir(parents=True)

    reopened = ImageStore(root)
    again = reopened.get("again:x")
    assert again.id == image.id and sorted(again.repo_tags) == sorted([test_images["busybox"], "again:x"])
    assert reopened.layer_dirs(again) == store.layer_dirs(image)
    assert not (root / "layers/.tmp-deadbeef-1234").exists()
    assert not (root / "tmp/blob-partial").exists()
    assert not (root / "layers" / ("ab" * 32)).exists()
    messages: list[dict] = []
    reopened.pull(test_images["busybox"], progress=messages.append)
    assert messages[-1]["status"].startswith("Status: Image is up to date")


def test_recovery_spares_temp_dirs_of_live_processes(test_images, tmp_path: Path) -> None:
    root = tmp_path / "store"
    ImageStore(root)
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = root / f"layers/.tmp-{os.getpid()}-abc"
    theirs = root / f"layers/.tmp-{dead.pid}-abc"
    mine.mkdir()
    theirs.mkdir()
    ImageStore(root)
    assert mine.is_dir() and not theirs.exists()


def test_concurrent_pulls_of_the_same_image(test_images, tmp_path: Path) -> None:
    root = tmp_path / "store"
    stores = [ImageStore(root), ImageStore(root)]     # two stores: locks must work across them too
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def pull(store: ImageStore) -> None:
        try:
            barrier.wait()
            results.append(store.pull(test_images["layered"]).id)
        except BaseException as err:   # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=pull, args=(stores[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4
    layers = [p for p in (root / "layers").iterdir() if p.name != "l"]
    assert len(layers) == 3 and not any(p.name.startswith(".tmp") for p in layers)
    image = ImageStore(root).get(test_images["layered"])
    assert (store_dirs := ImageStore(root).layer_dirs(image)) and all(d.is_dir() for d in store_dirs)


def test_corrupted_layer_stores_nothing(registry, test_images, tmp_path: Path) -> None:
    root = tmp_path / "store"
    with FaultyProxy(registry.host, mode="corrupt") as proxy:
        store = ImageStore(root, dial_map={registry.host: proxy.host})
        with pytest.raises(RegistryError, match="digest mismatch"):
            store.pull(test_images["busybox"])
    assert store.list() == []
    assert store.layers.all_chain_ids() == set()
    assert [p.name for p in (root / "layers").iterdir()] == ["l"]
    assert list((root / "tmp").iterdir()) == []
    with pytest.raises(NotFound):
        store.get(test_images["busybox"])


def test_interrupted_pull_resumes_through_dial_map(registry, test_images, tmp_path: Path) -> None:
    with FaultyProxy(registry.host, mode="cut", faults=2) as proxy:
        store = ImageStore(tmp_path / "store", dial_map={registry.host: proxy.host})
        image = store.pull(test_images["layered"])
        ranged = [r for r in proxy.blob_gets() if r[2]]
    assert image.repo_tags == [test_images["layered"]]          # the user's name, not the proxy's
    assert len(ranged) == 2
    assert all(d.is_dir() for d in store.layer_dirs(image))


def test_missing_tag_is_not_found(registry, test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    with pytest.raises(RegistryNotFound, match="not found"):
        store.pull(f"{registry.host}/busybox:nope")
    assert store.list() == []


def test_remove_by_digest_reference_and_untag_cleans_digests(test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    ref = test_images["busybox"]
    image = store.pull(ref)
    (digest_ref,) = image.repo_digests
    assert store.remove(digest_ref) == [{"Untagged": digest_ref}]
    assert store.get(ref).repo_digests == []
    store.pull(ref)                                            # the digest name comes back
    records = store.remove(ref)
    assert records[:2] == [{"Untagged": ref}, {"Untagged": digest_ref}]
    assert {"Deleted": image.id} in records
