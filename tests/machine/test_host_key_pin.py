"""The guest host key pin: fingerprints as ssh-keygen prints them, first-use pinning, refusal of a change."""

from __future__ import annotations

import subprocess

import pytest

from desktop.machine.host_key_pin import HostKeyChanged, check_or_pin, fingerprint, read_pin


def _keygen(path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "c", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def test_fingerprint_is_what_ssh_keygen_prints(tmp_path):
    line = _keygen(tmp_path / "k")
    printed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "k.pub")],
                             capture_output=True, text=True, check=True).stdout.split()[1]
    assert fingerprint(line) == printed


def test_first_key_is_pinned_then_only_it_passes(tmp_path):
    first, other = _keygen(tmp_path / "a"), _keygen(tmp_path / "b")
    pin = tmp_path / "pin"
    assert check_or_pin(pin, "m", first) is True
    assert read_pin(pin) == " ".join(first.split()[:2])
    assert check_or_pin(pin, "m", first + " another-comment") is False
    with pytest.raises(HostKeyChanged) as changed:
        check_or_pin(pin, "m", other)
    message = changed.value.message
    assert fingerprint(first) in message and fingerprint(other) in message
    assert "reset-host-key" in message and "\n" not in message
    assert read_pin(pin) == " ".join(first.split()[:2])   # the refusal leaves the pin alone
