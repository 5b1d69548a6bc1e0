"""Accelerator probe: on this machine (kvm_pvm, no vmx/svm) it must choose TCG and say why."""

from __future__ import annotations

import logging
from pathlib import Path

from desktop.machine import accel


def _host_has_virt_flags() -> bool:
    text = Path("/proc/cpuinfo").read_text()
    return any(" vmx" in line or " svm" in line for line in text.splitlines() if line.startswith("flags"))


def test_real_host_decision():
    choice = accel.probe_linux()
    if _host_has_virt_flags() and Path("/dev/kvm").exists():
        assert choice.name == "kvm"
    else:
        # REFERENCE.md: /dev/kvm opens here but cannot run guests; no vmx/svm flag.
        assert choice.name == "tcg"
        assert "vmx" in choice.reason and "svm" in choice.reason
    assert choice.libvirt_domain_type == ("kvm" if choice.name == "kvm" else "qemu")


def test_missing_device_means_tcg(tmp_path):
    choice = accel.probe_linux(dev_kvm=tmp_path / "kvm")
    assert choice.name == "tcg"
    assert "does not exist" in choice.reason


def test_device_that_is_not_kvm_means_tcg(tmp_path):
    # /dev/null opens read-write but answers no KVM ioctl.
    choice = accel.probe_linux(dev_kvm=Path("/dev/null"))
    assert choice.name == "tcg"
    assert "KVM_GET_API_VERSION" in choice.reason


def test_cpu_flags_decide_when_kvm_answers(tmp_path):
    if not Path("/dev/kvm").exists():
        return  # covered by test_missing_device_means_tcg
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 vmx\n")
    assert accel.probe_linux(cpuinfo=cpuinfo).name == "kvm"
    cpuinfo.write_text("processor : 0\nflags : fpu sse2\n")
    assert accel.probe_linux(cpuinfo=cpuinfo).name == "tcg"


def test_choice_is_logged_once_with_reason(monkeypatch, caplog):
    monkeypatch.setattr(accel, "_cached", None)
    monkeypatch.delenv("DOCKYARD_ACCEL", raising=False)
    with caplog.at_level(logging.INFO, logger="desktop.machine.accel"):
        first = accel.choose_accelerator()
        second = accel.choose_accelerator()
    assert first is second
    lines = [r.getMessage() for r in caplog.records if r.name == "desktop.machine.accel"]
    assert len(lines) == 1
    assert lines[0].startswith(f"accelerator: {first.name.upper()} (")


def test_override(monkeypatch):
    monkeypatch.setattr(accel, "_cached", None)
    monkeypatch.setenv("DOCKYARD_ACCEL", "TCG")
    choice = accel.choose_accelerator(log_choice=False)
    assert (choice.name, choice.reason) == ("tcg", "forced by DOCKYARD_ACCEL")
    monkeypatch.setattr(accel, "_cached", None)
