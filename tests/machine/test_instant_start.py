"""Which saved machine may be resumed: the recorded fingerprint against the machine as it would start now."""

from __future__ import annotations

import dataclasses

from desktop.machine.config import MachineConfig, Share
from desktop.machine.instant_start import changes, fingerprint


def test_an_unchanged_machine_may_resume():
    config = MachineConfig(name="m", cpus=2, memory_mib=1024, shares=[Share("/home/u", "dyshare0")])
    assert changes(fingerprint(config, "abc", "tcg"), fingerprint(config, "abc", "tcg")) == []


def test_each_change_that_a_saved_guest_cannot_follow_is_named():
    config = MachineConfig(name="m", cpus=2, memory_mib=1024, shares=[Share("/home/u", "dyshare0")])
    saved = fingerprint(config, "abc", "tcg")
    changed = dataclasses.replace(config, cpus=4, memory_mib=2048, shares=[])
    assert changes(saved, fingerprint(changed, "def", "kvm")) == [
        "the guest image changed ('abc' -> 'def')",
        "the accelerator changed ('tcg' -> 'kvm')",
        "CPUs changed (2 -> 4)",
        "memory (MiB) changed (1024 -> 2048)",
        "the shared folders changed ([['/home/u', 'dyshare0']] -> [])",
    ]


def test_a_record_without_a_fingerprint_never_resumes():
    assert changes({}, fingerprint(MachineConfig(name="m"), "abc", "tcg"))
