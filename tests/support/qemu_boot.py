"""A minimal direct `qemu-system-x86_64` boot of the guest image, for tests/vm_image only.

TCG (KVM does not run guests on this machine), 1 GiB, direct kernel boot, the
rootfs read-only as vda and a qcow2 data disk as vdb, user-mode networking with
an SSH port forward, virtio-rng, 9p shares, and the ready channel. The
product's own QEMU command lines live in desktop/.

The ready channel is a unix socket this helper listens on and QEMU connects to
(the product does it the other way round); listening first lets the test block
in accept()/recv() with a deadline instead of polling for QEMU's socket file.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_PORT = "org.dockyard.guest.0"


VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")  # QEMU's own; bookworm has no virtiofsd package


def start_virtiofsd(source: Path, sock: Path, log: Path, timeout: float = 10.0) -> subprocess.Popen:
    """One virtiofsd serving `source` on `sock`; returns once the socket exists."""
    sock.unlink(missing_ok=True)
    with open(log, "wb") as log_file:   # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([str(VIRTIOFSD), f"--socket-path={sock}", "-o", f"source={source}",
                                 "-o", "cache=auto", "-o", "sandbox=chroot"],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    # virtiofsd has no readiness notification: poll for its socket, with a deadline.
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"virtiofsd did not start: {log.read_text()}")
        time.sleep(0.01)
    return proc


def free_tcp_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_data_disk(path: Path, size: str = "4G") -> Path:
    """A blank qcow2 disk, as the machine manager creates it."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


@dataclass
class BootedGuest:
    """A running QEMU; `events` collects the JSON lines read so far."""

    process: subprocess.Popen
    channel: socket.socket | None
    helpers: list[subprocess.Popen]
    channel_path: Path
    ssh_port: int
    console_log: Path
    started_at: float
    events: list[dict] = field(default_factory=list)
    _buffer: bytes = b""

    def connect_channel(self, timeout: float = 30.0) -> None:
        """Connect to QEMU's ready socket (boot with host_listens=False), as the product does."""
        deadline = time.monotonic() + timeout
        while self.channel is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.channel_path))
                self.channel = sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"cannot connect to {self.channel_path}") from None
                time.sleep(0.01)  # QEMU creates the socket during start-up; poll with a deadline

    def qmp(self, command: str, timeout: float = 30.0) -> dict:
        """One QMP command (e.g. system_powerdown, the ACPI power button)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.channel_path.with_name("qmp.sock")))
            stream = sock.makefile("rwb")
            json.loads(stream.readline())  # greeting
            for request in ({"execute": "qmp_capabilities"}, {"execute": command}):
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                while True:
                    reply = json.loads(stream.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    def read_event(self, timeout: float) -> dict:
        """The next JSON line from the guest; blocks on the socket until `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no event from the guest in {timeout}s; console:\n{self.console_tail()}")
            self.channel.settimeout(remaining)
            try:
                chunk = self.channel.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise EOFError(f"ready channel closed (QEMU exited?); console:\n{self.console_tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        event = json.loads(line)
        self.events.append(event)
        return event

    def wait_for(self, name: str, timeout: float) -> dict:
        """Read events until one named `name` arrives (others are kept in `events`)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.read_event(max(0.0, deadline - time.monotonic()))
            if event.get("event") == name:
                return event

    def send(self, line: str) -> None:
        """A request line to the guest init (e.g. 'status')."""
        self.channel.sendall(line.encode() + b"\n")

    def console_tail(self, limit: int = 3000) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def wait_exit(self, timeout: float) -> int:
        """QEMU's exit status once it exits by itself (guest poweroff)."""
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """Stop QEMU at once (no guest shutdown) and close the channel."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for helper in self.helpers:
            if helper.poll() is None:
                helper.kill()
            helper.wait()
        if self.channel is not None:
            self.channel.close()


def boot(kernel: Path, initrd: Path, rootfs: Path, data_disk: Path, cmdline: str, workdir: Path,
         shares: list[tuple[str, Path]] = (), machine: str = "q35", smp: int = 1,
         memory_mb: int = 1024, accept_timeout: float = 30.0,
         extra_args: list[str] = (), sharefs: str = "9p", host_listens: bool = True) -> BootedGuest:
    """Start QEMU and return once it has connected to the ready channel.

    sharefs "9p" exports `shares` with -virtfs; "virtiofs" starts one QEMU
    virtiofsd per share (and the shared memory backend vhost-user needs).
    host_listens=False makes QEMU the socket server with nobody connected (the
    product's layout); call connect_channel() later.
    """
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise RuntimeError("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    workdir.mkdir(parents=True, exist_ok=True)
    ssh_port = free_tcp_port()
    channel_path = workdir / "ready.sock"
    channel_path.unlink(missing_ok=True)
    listener = None
    if host_listens:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(channel_path))
        listener.listen(1)
    chardev = f"socket,id=ready,path={channel_path}" + ("" if host_listens else ",server=on,wait=off")
    console_log = workdir / "console.log"
    cmd = [
        qemu, "-accel", "tcg", "-M", machine, "-m", str(memory_mb), "-smp", str(smp),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", f"file:{console_log}",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-drive", f"file={rootfs},format=raw,if=virtio,readonly=on",
        "-drive", f"file={data_disk},format=qcow2,if=virtio",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-device", "virtio-rng-pci",
        "-qmp", f"unix:{workdir / 'qmp.sock'},server=on,wait=off",
        "-chardev", chardev,
        "-device", "virtio-serial-pci",
        "-device", f"virtserialport,chardev=ready,name={READY_PORT}",
    ]
    cmd += list(extra_args)
    helpers: list[subprocess.Popen] = []
    if sharefs == "virtiofs" and shares:
        cmd += ["-object", f"memory-backend-memfd,id=mem,size={memory_mb}M,share=on",
                "-numa", "node,memdev=mem"]
    for index, (tag, path) in enumerate(shares):
        if sharefs == "virtiofs":
            sock = workdir / f"virtiofs{index}.sock"
            helpers.append(start_virtiofsd(path, sock, workdir / f"virtiofsd{index}.log"))
            cmd += ["-chardev", f"socket,id=vfs{index},path={sock}",
                    "-device", f"vhost-user-fs-pci,queue-size=1024,chardev=vfs{index},tag={tag}"]
        else:
            cmd += ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none,id=fs{index}"]
    started_at = time.monotonic()
    with open(workdir / "qemu.log", "wb") as log_file:   # the child keeps its own copy
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    if listener is None:
        return BootedGuest(process=process, channel=None, helpers=helpers, channel_path=channel_path,
                           ssh_port=ssh_port, console_log=console_log, started_at=started_at)
    listener.settimeout(accept_timeout)
    try:
        channel, _ = listener.accept()
    except TimeoutError:
        process.kill()
        process.wait()
        for helper in helpers:
            helper.kill()
            helper.wait()
        raise RuntimeError(f"QEMU did not connect the ready channel: {(workdir / 'qemu.log').read_text()}") from None
    finally:
        listener.close()
    return BootedGuest(process=process, channel=channel, helpers=helpers, channel_path=channel_path,
                       ssh_port=ssh_port,
                       console_log=console_log, started_at=started_at)
