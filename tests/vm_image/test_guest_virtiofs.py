"""Host folders through virtiofs (QEMU's virtiofsd) instead of 9p, on a second guest."""

from __future__ import annotations

import pytest

from tests.support import qemu_boot
from tests.vm_image.conftest import boot_guest, run

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def virtiofs_vm(guest_image, vm_files, tmp_path_factory):
    base = tmp_path_factory.mktemp("virtiofs")
    _, key_path, _, _ = vm_files
    share = base / "shared folder"
    share.mkdir()
    disk = qemu_boot.create_data_disk(base / "data.qcow2")
    booted = boot_guest(guest_image, base / "boot", disk, key_path, share, sharefs="virtiofs")
    yield booted
    booted.guest.kill()


def test_virtiofs_share_is_mounted_and_writable_both_ways(virtiofs_vm):
    vm = virtiofs_vm
    assert vm.ready["errors"] == []
    assert vm.ready["shares"] == [str(vm.share_dir)]
    (vm.share_dir / "host.txt").write_text("from host\n")
    with vm.ssh() as client:
        status, out, err = run(client, f"cat '{vm.share_dir}/host.txt' && "
                                       f"echo from guest > '{vm.share_dir}/guest.txt' && "
                                       f"findmnt -n -o FSTYPE '{vm.share_dir}'")
    assert status == 0, err
    assert out.split("\n")[:2] == ["from host", "virtiofs"]
    assert (vm.share_dir / "guest.txt").read_text() == "from guest\n"
