"""Host-side unit tests of the guest init's pure parts (the VM tests cover the rest)."""

from __future__ import annotations

import base64

from vmimage.guest_init.bootopts import Share, parse_cmdline
from vmimage.guest_init.datadisk import classify
from vmimage.guest_init.services import tcp_listening, unix_listening


def test_cmdline_reads_dockyard_arguments_and_ignores_the_rest():
    key = "ssh-ed25519 AAAAC3Nza test@host"
    opts = parse_cmdline(
        "console=ttyS0 quiet dockyard.key=" + base64.b64encode(key.encode()).decode()
        + " dockyard.sharefs=9p dockyard.shares=h0:/home/me,h1:/tmp/x dockyard.time=1700000000"
        + " dockyard.hostloop=10.0.2.2")
    assert opts.authorized_key == key
    assert opts.sharefs == "9p"
    assert opts.shares == [Share("h0", "/home/me"), Share("h1", "/tmp/x")]
    assert opts.time == 1700000000
    assert opts.hostloop == "10.0.2.2"
    assert opts.errors == []


def test_cmdline_reports_bad_values_instead_of_failing():
    opts = parse_cmdline("dockyard.key=%%% dockyard.sharefs=nfs dockyard.shares=nocolon,t:rel "
                         "dockyard.time=soon")
    assert opts.authorized_key == "" and opts.sharefs == "none" and opts.shares == []
    assert opts.time is None
    assert len(opts.errors) == 5
    assert any("dockyard.sharefs=nfs" in e for e in opts.errors)


def test_data_disk_classification_never_calls_foreign_data_blank():
    blank = bytes(1 << 20)
    ext4 = bytearray(blank)
    ext4[1080:1082] = b"\x53\xef"
    foreign = bytearray(blank)
    foreign[0:4] = b"XFSB"
    assert classify(blank) == "blank"
    assert classify(bytes(ext4)) == "ext4"
    assert classify(bytes(foreign)) == "unknown"


def test_listening_checks_read_proc_tables(tmp_path):
    tcp = tmp_path / "tcp"
    tcp.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 00000000:0016 00000000:0000 0A 00000000:00000000\n"
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000\n")
    assert tcp_listening(22, str(tcp))
    assert not tcp_listening(8080, str(tcp))  # established, not listening
    listening, connected = tmp_path / "docker.sock", tmp_path / "other.sock"
    listening.touch()
    connected.touch()
    unix = tmp_path / "unix"
    unix.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        f"0000: 00000002 00000000 00010000 0001 01 1234 {listening}\n"
        f"0000: 00000003 00000000 00000000 0001 03 1235 {connected}\n")
    assert unix_listening(str(listening), str(unix))
    assert not unix_listening(str(connected), str(unix))
    assert not unix_listening(str(tmp_path / "absent.sock"), str(unix))


def test_share_paths_are_percent_decoded():
    opts = parse_cmdline("dockyard.shares=h0:/Users/me/My%20Files,t%2C1:/a%3Ab%25c,bad:/x%zz")
    assert opts.shares == [Share("h0", "/Users/me/My Files"), Share("t,1", "/a:b%c")]
    assert len(opts.errors) == 1 and "bad %-escape" in opts.errors[0]


def test_power_button_press_is_recognised_in_input_events():
    from vmimage.guest_init.powerbutton import pressed

    def event(kind: int, code: int, value: int) -> bytes:
        return bytes(16) + kind.to_bytes(2, "little") + code.to_bytes(2, "little") + \
            value.to_bytes(4, "little", signed=True)

    sync = event(0, 0, 0)
    assert pressed(event(1, 116, 1) + sync)
    assert not pressed(event(1, 116, 0) + sync)  # release only
    assert not pressed(event(1, 30, 1) + sync)  # another key


def test_service_logs_on_run_are_capped_and_keep_their_tail(tmp_path):
    from vmimage.guest_init.services import cap_log

    log = tmp_path / "agent.log"
    with open(log, "ab") as writer:  # the agent's stdout: O_APPEND
        writer.write(b"x" * 2000 + b"END\n")
        writer.flush()
        assert not cap_log(str(log), limit=5000, keep=100)
        assert cap_log(str(log), limit=1000, keep=100)
        writer.write(b"after\n")
        writer.flush()
    assert log.read_bytes() == b"after\n"
    assert (tmp_path / "agent.log.1").read_bytes().endswith(b"xEND\n")
    assert len((tmp_path / "agent.log.1").read_bytes()) == 100


def test_trim_is_due_only_after_enough_was_freed():
    from vmimage.guest_init.trim import TrimSchedule

    mib = 1 << 20
    schedule = TrimSchedule("/nowhere", min_freed=64 * mib)
    # (bytes written since mount, bytes used)
    assert not schedule.observe(10 * mib, 500 * mib)       # first check at boot: only the measure
    assert not schedule.observe(10 * mib, 500 * mib)       # idle: nothing written, nothing freed
    assert not schedule.observe(310 * mib, 800 * mib)      # 300 MiB written and still used
    assert schedule.observe(310 * mib, 500 * mib)          # ...then deleted
    schedule = TrimSchedule("/nowhere", min_freed=64 * mib)
    schedule.observe(0, 500 * mib)
    assert schedule.observe(300 * mib, 500 * mib)          # written and deleted between two checks
    assert not schedule.observe(300 * mib, 460 * mib)      # 40 MiB of old data deleted: not yet
    assert schedule.observe(300 * mib, 420 * mib)          # 80 MiB since the last trim


def test_trim_schedule_without_its_filesystem_is_never_due():
    from vmimage.guest_init.trim import TrimSchedule

    assert not TrimSchedule("/nonexistent/data", "/nonexistent/written").due()


def test_after_a_resume_only_unmounted_shares_are_mounted_and_failures_named(tmp_path):
    from vmimage.guest_init.bootopts import Share
    from vmimage.guest_init.shares import remount_shares

    # /proc is a mount point: left alone, no mount(2) attempted.
    assert remount_shares("9p", [Share(tag="dyshare0", path="/proc")]) == ([], [])
    assert remount_shares("none", [Share(tag="dyshare0", path=str(tmp_path))]) == ([], [])
    # Not mounted: a mount is tried; here there is no such 9p device, so it fails by name.
    mounted, errors = remount_shares("9p", [Share(tag="nosuchtag", path=str(tmp_path / "s"))])
    assert mounted == [] and len(errors) == 1 and errors[0].startswith(f"share nosuchtag at {tmp_path / 's'}: ")
