"""What the agent loads before its socket answers: kept lean, because in a TCG guest
every module imported there lengthens the machine's boot (the agent is its last step)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from guest_agent.cli import _parse_serve_fast

REPO = Path(__file__).resolve().parents[2]
# Each of these costs 0.1-0.4 s of a cold TCG boot (measured in the guest); none is needed
# to bind the socket and answer _ping and version.
HEAVY = ("http.server", "http.client", "email", "ssl", "typing", "argparse", "dataclasses",
         "inspect", "pathlib", "platform")


def test_the_start_up_path_imports_no_heavy_module() -> None:
    code = ("import sys, json; import guest_agent.cli, guest_agent.http_server, guest_agent.routes_system; "
            "print(json.dumps(sorted(sys.modules)))")
    # -S as in the guest (no site packages); the guest's Debian python3 is this one.
    out = subprocess.run(["/usr/bin/python3", "-S", "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_serve_command_line_without_argparse() -> None:
    args = _parse_serve_fast(["serve", "--socket", "/run/d.sock", "--root=/var/lib/d",
                              "--insecure-registry", "a:5000", "--insecure-registry=b", "--log-level", "debug"])
    assert args is not None
    assert (args.socket, args.root, args.insecure_registry, args.log_level) == \
        ("/run/d.sock", "/var/lib/d", ["a:5000", "b"], "debug")


def test_anything_else_is_left_to_argparse() -> None:
    for argv in (["serve", "--help"], ["serve", "--socket", "/s"], ["serve", "--root", "/r", "--socket"],
                 ["serve", "--socket", "/s", "--root", "/r", "--log-level", "loud"], ["version"], []):
        assert _parse_serve_fast(argv) is None, argv
