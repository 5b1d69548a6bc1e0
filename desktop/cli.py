"""The headless `dockyard` command: `dockyard machine init|start|stop|...` and `dockyard bundle save|load`.

Imports are lazy so that `dockyard --help` and `status` stay fast: paramiko and
libvirt load only for the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import docker

    from desktop.machine.boot_stages import BootStage

log = logging.getLogger("dockyard")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard", description="Dockyard: containers in a small local VM.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    top = parser.add_subparsers(dest="group", required=True)
    machine = top.add_parser("machine", help="manage the Dockyard VM")
    sub = machine.add_subparsers(dest="command", required=True)

    def named(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--name", default="default", help="machine name (default: %(default)s)")
        return p

    init = named("init", "create the machine (key pair, data disk, config)")
    init.add_argument("--cpus", type=int, default=None, help="CPUs (default: the cpus setting, else 2)")
    init.add_argument("--memory", default=None, help="RAM, e.g. 2G or 1536M (default: the memory setting, else 2G)")
    init.add_argument("--disk", default=None, help="data disk size (default: the disk setting, else 20G)")
    init.add_argument("--mount", action="append", metavar="HOSTPATH",
                      help="host folder to share at the same path in the VM (repeatable; default: the "
                           "shared_folders setting, else your home)")
    init.add_argument("--no-mount", action="store_true", help="share no host folder")
    init.add_argument("--sharefs", choices=["9p", "virtiofs", "sftp", "none"], default="9p",
                      help="how folders are shared (default: %(default)s)")
    init.add_argument("--backend", choices=["libvirt", "qemu"], default=None,
                      help="VM backend (default: libvirt when available, else qemu)")
    init.add_argument("--libvirt-uri", default=None, help="libvirt connection URI (default: per user)")
    init.add_argument("--start", action="store_true", help="start the machine after creating it")

    start = named("start", "boot the machine; prints the DOCKER_HOST to use")
    start.add_argument("--timeout", type=float, default=None,
                       help="seconds to wait for the guest (default: the ready_timeout setting)")
    stop = named("stop", "save the running machine for an instant next start (or power it off, see --cold)")
    stop.add_argument("--cold", action="store_true", default=None,
                      help="power the guest off instead of saving it (default: the save_on_stop setting)")
    restart = named("restart", "stop then start")
    restart.add_argument("--timeout", type=float, default=None)
    status = named("status", "show the machine state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    ssh = named("ssh", "open a shell in the VM, or run CMD there (a clean login environment)")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run")
    ssh.set_defaults(handler=_lazy("desktop.cli_machine_ssh", "cmd_ssh"))
    named("reset-host-key", "forget the pinned guest SSH host key (the next start pins the new one)") \
        .set_defaults(handler=_lazy("desktop.cli_machine_ssh", "cmd_reset_host_key"))
    logs = named("logs", "print the guest console log")
    logs.add_argument("--supervisor", action="store_true", help="print the host supervisor log instead")
    rm = named("rm", "delete the machine and its data disk")
    rm.add_argument("-f", "--force", action="store_true", help="stop it first if running")
    image = sub.add_parser("image", help="guest image")
    image_sub = image.add_subparsers(dest="image_command", required=True)
    build = image_sub.add_parser("build", help="build (or find cached) the guest image")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    from desktop.cli_machine_image import add_parsers as add_image_parsers

    add_image_parsers(image_sub)
    shown = top.add_parser("settings", help="print every setting in force and where it comes from")
    shown.add_argument("--json", action="store_true", help="machine-readable output")
    shown.set_defaults(command="settings")
    _add_bundle_parser(top)
    return parser


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command handler from a module of its own, imported only when that command runs."""
    def handler(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), name)(args))
    return handler


def _add_bundle_parser(top: argparse._SubParsersAction) -> None:
    bundle = top.add_parser("bundle", help="a whole environment (containers, images, volumes, networks) in one file")
    sub = bundle.add_subparsers(dest="command", required=True)

    def engine_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("-H", "--host", default=None,
                       help="engine URL, e.g. unix:///path/docker.sock (default: $DOCKER_HOST, else the machine)")
        p.add_argument("--machine", default="default", help="machine whose engine to use (default: %(default)s)")

    save = sub.add_parser("save", help="write containers (or a compose project) to one file")
    save.add_argument("-o", "--output", required=True, type=Path, help="the bundle file to write")
    save.add_argument("--project", default=None, help="every container of this compose project")
    save.add_argument("containers", nargs="*", metavar="CONTAINER", help="containers to save (names or ids)")
    engine_options(save)
    save.set_defaults(handler=cmd_bundle_save)
    load = sub.add_parser("load", help="recreate a bundle's containers on an engine")
    load.add_argument("file", type=Path, help="the bundle file")
    load.add_argument("--project", default=None, help="rename the bundle's compose project to this")
    engine_options(load)
    load.set_defaults(handler=cmd_bundle_load)


def cmd_init(args: argparse.Namespace) -> int:
    from desktop import settings
    from desktop.machine.config import MachineConfig, default_backend, parse_size_mib, shares_for
    from desktop.machine.manager import MachineManager

    current = settings.load()
    mounts: list[str | Path] = [] if args.no_mount else (args.mount or list(current.shared_folders or [Path.home()]))
    config = MachineConfig(
        name=args.name,
        cpus=args.cpus or current.cpus or 2,
        memory_mib=parse_size_mib(args.memory) if args.memory else current.memory or 2048,
        disk_mib=parse_size_mib(args.disk) if args.disk else current.disk or 20 * 1024,
        backend=args.backend or default_backend(),
        sharefs=args.sharefs,
        shares=shares_for(mounts) if args.sharefs != "none" else [],
        libvirt_uri=args.libvirt_uri,
    )
    from desktop.cli_machine_image import note_for_init

    # Before anything is created: a machine with no image it could boot is refused here.
    image_note = note_for_init()
    manager = MachineManager(args.name)
    manager.init(config)
    print(image_note, file=sys.stderr)
    print(f"machine {args.name!r} created ({config.backend}, {config.cpus} CPUs, {config.memory_mib} MiB RAM, "
          f"{config.disk_mib // 1024} GiB disk, shares: {', '.join(s.host_path for s in config.shares) or 'none'})")
    if args.start:
        args.timeout = None
        return cmd_start(args)
    return 0


class StageLine:
    """`dockyard machine start`'s progress line: the boot stages the desktop app's tray shows too.

    On a terminal the line is rewritten in place; elsewhere (logs, tests) each stage is a line.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.shown = False

    def __call__(self, stage: BootStage) -> None:
        from desktop.machine.boot_stages import progress_text

        if self.tty:
            print(f"\r\033[K{progress_text(stage)}", end="", file=self.stream, flush=True)
        else:
            print(progress_text(stage), file=self.stream, flush=True)
        self.shown = True

    def done(self) -> None:
        if self.tty and self.shown:
            print(file=self.stream)


def cmd_start(args: argparse.Namespace) -> int:
    from desktop.machine.manager import MachineManager

    progress = StageLine()
    try:
        result = MachineManager(args.name).start(timeout=args.timeout or None, on_stage=progress)
    finally:
        progress.done()
    if result.already_running:
        print(f"machine {args.name!r} is already running", file=sys.stderr)
    else:
        print(f"machine {args.name!r} started in {result.seconds:.1f} s", file=sys.stderr)
    print(f"export DOCKER_HOST={result.docker_host}")
    from desktop import docker_context
    hint = docker_context.publish(result.docker_host, docker_context.context_name(args.name))
    if hint:
        print(hint, file=sys.stderr)
    print(BUILDKIT_HINT, file=sys.stderr)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from desktop.machine.manager import MachineManager

    manager = MachineManager(args.name)
    if manager.stop(cold=getattr(args, "cold", None)):
        saved = manager.backend().has_saved_state()
        print(f"machine {args.name!r} {'saved' if saved else 'stopped'}", file=sys.stderr)
    else:
        print(f"machine {args.name!r} is not running", file=sys.stderr)
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    args.cold = True  # a restart is asked for a fresh guest, not the saved one
    cmd_stop(args)
    return cmd_start(args)


def cmd_status(args: argparse.Namespace) -> int:
    from desktop.machine.manager import MachineManager, status_json

    info = MachineManager(args.name).status()
    if args.json:
        print(status_json(info))
        return 0
    from desktop.machine.status_report import render_text

    print("\n".join(render_text(info)))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from desktop.machine.manager import MachineManager
    from runtime.errors import NotFound

    manager = MachineManager(args.name)
    manager.config()
    path = manager.supervisor_log if args.supervisor else manager.console_log
    try:
        with open(path, "rb") as f:
            while chunk := f.read(65536):
                sys.stdout.buffer.write(chunk)
    except FileNotFoundError:
        raise NotFound(f"no log yet at {path}: the machine has not been started") from None
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from desktop.machine.manager import MachineManager

    MachineManager(args.name).remove(force=args.force)
    print(f"machine {args.name!r} removed", file=sys.stderr)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from desktop import paths

    try:
        from vmimage.guest_image import ensure_image
    except ImportError as err:
        from runtime.errors import RuntimeFailure

        raise RuntimeFailure(f"the guest image builder is not available: {err}") from err
    from desktop.machine.guest_image_source import IMPORT_HINT
    from vmimage.build_host import local_build_blocker

    blocker = local_build_blocker()
    if blocker:
        from runtime.errors import RuntimeFailure

        raise RuntimeFailure(f"{blocker}; {IMPORT_HINT} instead")
    cache = paths.image_cache_dir()
    if args.force:
        import inspect

        if "force" not in inspect.signature(ensure_image).parameters:
            from runtime.errors import InvalidArgument

            raise InvalidArgument("this image builder has no --force; use `python -m vmimage build --force`")
        image = ensure_image(cache, force=True)
    else:
        image = ensure_image(cache)
    for field in ("kernel", "initrd", "rootfs", "cmdline", "recipe_hash"):
        print(f"{field}: {getattr(image, field)}")
    return 0


def _engine_client(args: argparse.Namespace) -> contextlib.closing[docker.DockerClient]:
    """docker-py on the engine named by --host (else $DOCKER_HOST, else --machine), closed after the `with`."""
    from desktop.engine_client import client_for_host

    return contextlib.closing(client_for_host(args.host, args.machine))


def cmd_bundle_save(args: argparse.Namespace) -> int:
    from desktop.bundle.bundle_save import save_bundle

    with _engine_client(args) as client:
        summary = save_bundle(client, args.output, args.containers, args.project)
    print(f"saved {summary.containers} containers, {summary.images} images, {summary.volumes} volumes, "
          f"{summary.networks} networks to {args.output} ({summary.size / 1e6:.1f} MB)")
    return 0


def cmd_bundle_load(args: argparse.Namespace) -> int:
    from desktop.bundle.bundle_load import load_bundle

    with _engine_client(args) as client:
        made = load_bundle(client, args.file, args.project)
    print(f"loaded {len(made.containers)} containers ({len(made.started)} started), {len(made.volumes)} volumes, "
          f"{len(made.networks)} networks, {len(made.images)} new images from {args.file}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    import json

    from desktop import settings

    current = settings.load()
    rows = {}
    for setting in settings.SETTINGS:
        value = getattr(current, setting.key)
        value = list(value) if isinstance(value, tuple) else (str(value) if isinstance(value, Path) else value)
        rows[setting.key] = {"value": value, "source": current.source(setting.key), "env": setting.env}
    if args.json:
        print(json.dumps({"file": str(settings.settings_file(current.home)), "settings": rows}, indent=2))
        return 0
    print(f"# {settings.settings_file(current.home)}")
    width = max(len(k) for k in rows)
    for key, row in rows.items():
        print(f"{key:<{width}}  {row['value']!s:<24}  ({row['source']})")
    return 0


# Compose v2 assumes BuildKit unless told otherwise; the engine has the classic builder.
BUILDKIT_HINT = ("builds: Dockyard has Docker's classic builder, not BuildKit; "
                 "for `docker compose build` also export DOCKER_BUILDKIT=0")


COMMANDS = {
    "init": cmd_init, "start": cmd_start, "stop": cmd_stop, "restart": cmd_restart, "status": cmd_status,
    "logs": cmd_logs, "rm": cmd_rm, "image": cmd_image,
    "settings": cmd_settings,
}


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="dockyard: %(message)s", stream=sys.stderr)
    if not args.verbose:
        # The accelerator choice is worth one line even when quiet.
        logging.getLogger("desktop.machine.accel").setLevel(logging.INFO)
        # So is booting an imported guest image rather than one built here.
        logging.getLogger("desktop.machine.guest_image_source").setLevel(logging.INFO)
    from runtime.errors import DockyardError

    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return int(handler(args))
    except DockyardError as err:
        print(f"dockyard: {err.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dockyard: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line for the user, details with -v
        if args.verbose:
            raise
        print(f"dockyard: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
