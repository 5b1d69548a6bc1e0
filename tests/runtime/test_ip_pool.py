"""The address pool: addresses in turn, persistence, and leases shared between pools."""

from __future__ import annotations

import json
import os
import time

from runtime.network.ip_pool import IPPool


def test_addresses_in_turn_persisted_and_reused_only_after_a_wrap(tmp_path):
    pool = IPPool(tmp_path / "ipam.json", "10.9.0.0/29")   # hosts .1 (gateway) to .6
    assert pool.gateway.compressed == "10.9.0.1"
    assert [pool.allocate(o) for o in "abc"] == ["10.9.0.2", "10.9.0.3", "10.9.0.4"]
    assert pool.allocate("b") == "10.9.0.3"  # same owner, same address
    assert pool.release("b") and not pool.release("b")
    reloaded = IPPool(tmp_path / "ipam.json", "10.9.0.0/29")
    assert reloaded.get("a") == "10.9.0.2" and reloaded.get("b") is None
    # b's address is not handed out again at once: the position survived the reload.
    assert reloaded.allocate("d") == "10.9.0.5"
    assert reloaded.allocate("e") == "10.9.0.6"
    assert reloaded.allocate("f") == "10.9.0.3"   # wrapped around, skipping the gateway
    assert reloaded.retain_only(["a"]) == ["c", "d", "e", "f"]
    assert json.loads((tmp_path / "ipam.json").read_text())["allocations"] == {"a": "10.9.0.2"}


def test_pools_sharing_a_bridge_never_hand_out_the_same_address(tmp_path):
    leases = tmp_path / "leases"
    one = IPPool(tmp_path / "one.json", "10.9.0.0/24", lease_dir=leases)
    two = IPPool(tmp_path / "two.json", "10.9.0.0/24", lease_dir=leases)
    assert one.allocate("x") == "10.9.0.2"
    assert two.allocate("y") == "10.9.0.3"
    assert one.allocate("z") == "10.9.0.4"
    one.release("x")
    assert not (leases / "10.9.0.2").exists()
    assert two.allocate("w") == "10.9.0.5"   # .4 is one's


def test_stale_lease_of_a_vanished_pool_is_reclaimed(tmp_path):
    leases = tmp_path / "leases"
    (tmp_path / "gone").mkdir()
    gone = IPPool(tmp_path / "gone" / "ipam.json", "10.9.0.0/29", lease_dir=leases)
    assert gone.allocate("old") == "10.9.0.2"
    (tmp_path / "gone" / "ipam.json").unlink()  # its engine's state was deleted
    fresh = IPPool(tmp_path / "new.json", "10.9.0.0/29", lease_dir=leases)
    # Within the grace period the lease is respected (its pool may be about to save it).
    assert fresh.allocate("a") == "10.9.0.3"
    old = time.time() - 60
    os.utime(leases / "10.9.0.2", (old, old))
    assert [fresh.allocate(o) for o in "bcde"] == ["10.9.0.4", "10.9.0.5", "10.9.0.6", "10.9.0.2"]
    assert json.loads((leases / "10.9.0.2").read_text())["owner"] == "e"


def test_lease_of_a_dead_owner_is_reclaimed_even_if_its_pool_still_lists_it(tmp_path):
    leases = tmp_path / "leases"
    IPPool(tmp_path / "crashed.json", "10.9.0.0/24", lease_dir=leases).allocate("dead")
    old = time.time() - 60
    os.utime(leases / "10.9.0.2", (old, old))
    respectful = IPPool(tmp_path / "a.json", "10.9.0.0/24", lease_dir=leases,
                        lease_alive=lambda pool, owner: True)
    assert respectful.allocate("x") == "10.9.0.3"
    reclaiming = IPPool(tmp_path / "b.json", "10.9.0.0/24", lease_dir=leases,
                        lease_alive=lambda pool, owner: owner != "dead")
    assert reclaiming.allocate("y") == "10.9.0.2"


def test_a_pool_file_torn_by_a_power_cut_starts_afresh(tmp_path):
    # Written without fsync (a container start would pay for it): a killed VM can leave it
    # empty or cut short, which must not stop the engine from starting.
    for torn in (b"", b'{"subnet": "10.9.0.0/29", "next": 1, "allocations": {"a": "10.9'):
        (tmp_path / "ipam.json").write_bytes(torn)
        pool = IPPool(tmp_path / "ipam.json", "10.9.0.0/29")
        assert pool.get("a") is None
        assert pool.allocate("a") == "10.9.0.2"
