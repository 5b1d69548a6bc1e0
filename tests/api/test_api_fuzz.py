"""API fuzz test: random and mutated requests to a native agent never get a 500 and never
bring it down.

Hypothesis generates create, start, exec create/start and build bodies (valid ones, ones
with a random JSON value in a known field, and byte-level mutations of valid JSON text)
and raw HTTP bytes (bad request lines, huge headers, bad Content-Length, bad or cut chunked
bodies, truncated bodies). Every answer must be a 4xx, or a 2xx for a body built valid;
`GET /_ping` must answer after each example, the agent's thread count must come back down
afterwards, and it must exit cleanly on SIGTERM at the end.

The run is reproducible and bounded: `derandomize=True` (examples derived from each
test's name), no example database, no deadline, a fixed number of examples per test.
The number of requests sent is printed in the terminal summary.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.agent import RunningAgent, http_request, start_agent
from tests.support.waiting import poll

API = "/v1.45"
CASES: Counter[str] = Counter()   # requests sent, by kind; printed at the end of the module

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------- the agent


class Target:
    """The fuzzed agent, a pulled image, a running container and a stopped one."""

    def __init__(self, agent: RunningAgent, image: str, running: str, stopped: str) -> None:
        self.agent = agent
        self.image = image
        self.running = running
        self.stopped = stopped

    def request(self, kind: str, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        CASES[kind] += 1
        status, _, data = http_request(self.agent.socket, method, API + path, body,
                                       headers or {"Content-Type": "application/json"}, timeout=60)
        return status, data

    def check_alive(self) -> None:
        assert self.agent.alive(), f"agent died:\n{self.agent.log_text()[-4000:]}"
        status, _, _ = http_request(self.agent.socket, "GET", "/_ping", timeout=10)
        assert status == 200

    def threads(self) -> int:
        return len(list(Path(f"/proc/{self.agent.process.pid}/task").iterdir()))


def _ok(result: Any) -> str:
    assert result.returncode == 0, f"docker failed: {result.args}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def target(tmp_path_factory, test_images, request) -> Iterator[Target]:
    base = tmp_path_factory.mktemp("fuzz")
    agent = start_agent(socket=base / "docker.sock", root=base / "root", log_level="info")
    image = test_images["busybox"]
    try:
        _ok(agent.docker("pull", image, timeout=180))
        running = f"fuzz-run-{uuid.uuid4().hex[:8]}"
        _ok(agent.docker("run", "-d", "--network", "none", "--name", running, image, "sleep", "600"))
        stopped = f"fuzz-stopped-{uuid.uuid4().hex[:8]}"
        _ok(agent.docker("create", "--network", "none", "--name", stopped, image, "true"))
        baseline = len(list(Path(f"/proc/{agent.process.pid}/task").iterdir()))
        fuzzed = Target(agent, image, running, stopped)
        yield fuzzed
        fuzzed.check_alive()
        # Every connection thread ends once its client is gone: nothing malformed leaks one.
        poll(lambda: fuzzed.threads() <= baseline + 2, timeout=30,
             what=f"the agent's threads back to {baseline} (+2)")
        agent.docker("rm", "-f", running, stopped)
    finally:
        _report(request.config)
        agent.stop()   # SIGTERM; fails unless the agent exits 0


class _CountReport:
    """A plugin registered at the end of the module: prints the request counts in the
    terminal summary (shown with or without -s or -q)."""

    def __init__(self, line: str) -> None:
        self.line = line

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_line(self.line)


def _report(config: pytest.Config) -> None:
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(CASES.items()))
    config.pluginmanager.register(_CountReport(f"API fuzz: {sum(CASES.values())} requests sent ({counts})"))


def assert_client_answer(status: int, data: bytes, what: str) -> None:
    """A 4xx with Docker's JSON error body."""
    assert 400 <= status < 500, f"{what}: {status} {data[:500]!r}"
    assert isinstance(json.loads(data).get("message"), str), data


# --------------------------------------------------------------------------- JSON values

SCALARS = (st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

CONFIG_KEYS = ["Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr",
               "ExposedPorts", "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck",
               "ArgsEscaped", "Image", "Volumes", "WorkingDir", "Entrypoint", "NetworkDisabled",
               "MacAddress", "OnBuild", "Labels", "StopSignal", "StopTimeout", "Shell",
               "HostConfig", "NetworkingConfig", "cmd", "x-unknown"]
HOST_CONFIG_KEYS = ["Binds", "Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares",
                    "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems", "PidsLimit", "Ulimits",
                    "Devices", "DeviceCgroupRules", "LogConfig", "NetworkMode", "PortBindings",
                    "RestartPolicy", "AutoRemove", "VolumesFrom", "Mounts", "ConsoleSize",
                    "CapAdd", "CapDrop", "CgroupnsMode", "Dns", "DnsOptions", "DnsSearch",
                    "ExtraHosts", "GroupAdd", "IpcMode", "PidMode", "Links", "OomScoreAdj",
                    "Privileged", "PublishAllPorts", "ReadonlyRootfs", "SecurityOpt", "Tmpfs",
                    "ShmSize", "Sysctls", "Init", "MaskedPaths", "ReadonlyPaths", "Annotations",
                    "Runtime", "Isolation", "StorageOpt", "UsernsMode", "memory"]

SAFE_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=12)
ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)


@st.composite
def valid_create_bodies(draw: st.DrawFn, image: str) -> dict[str, Any]:
    """Bodies Docker accepts: the create must answer 201."""
    body: dict[str, Any] = {"Image": image, "Cmd": draw(st.lists(SAFE_TEXT, min_size=1, max_size=3))}
    if draw(st.booleans()):
        body["Env"] = [f"{k}={v}" for k, v in draw(st.lists(st.tuples(ENV_NAME, SAFE_TEXT), max_size=3))]
    if draw(st.booleans()):
        body["Labels"] = draw(st.dictionaries(SAFE_TEXT, SAFE_TEXT, max_size=3))
    if draw(st.booleans()):
        body["WorkingDir"] = "/" + draw(st.from_regex(r"[a-z0-9_]{0,8}(/[a-z0-9_]{1,8}){0,2}", fullmatch=True))
    for key in ("Tty", "OpenStdin", "AttachStdout"):
        if draw(st.booleans()):
            body[key] = draw(st.booleans())
    host: dict[str, Any] = {}
    if draw(st.booleans()):
        host["Memory"] = draw(st.sampled_from([0, 64 << 20, 1 << 30]))
    if draw(st.booleans()):
        host["RestartPolicy"] = {"Name": draw(st.sampled_from(["", "no", "always", "unless-stopped"]))}
    if draw(st.booleans()):
        host["NetworkMode"] = "none"
    if host or draw(st.booleans()):
        body["HostConfig"] = host
    return body


@st.composite
def mutated_create_bodies(draw: st.DrawFn, image: str) -> Any:
    """A valid body with random JSON in known (and unknown) fields, or not an object at all."""
    body = draw(valid_create_bodies(image))
    for key in draw(st.lists(st.sampled_from(CONFIG_KEYS), min_size=1, max_size=3)):
        body[key] = draw(JSON_VALUES)
    if draw(st.booleans()):
        host = body.get("HostConfig")
        host = dict(host) if isinstance(host, dict) else {}
        for key in draw(st.lists(st.sampled_from(HOST_CONFIG_KEYS), min_size=1, max_size=3)):
            host[key] = draw(JSON_VALUES)
        body["HostConfig"] = host
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)   # the whole body of the wrong shape
    return body


@st.composite
def mutated_json_text(draw: st.DrawFn, document: Any) -> bytes:
    """Valid JSON text cut, with bytes deleted, replaced or inserted (mostly invalid JSON)."""
    data = bytearray(json.dumps(document).encode())
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["cut", "delete", "replace", "insert"]))
        byte = draw(st.sampled_from(b'{}[]",:\\0-e.\x00\xff\xc3 tnfNI'))
        if action == "cut":
            del data[where:]
        elif action == "delete":
            del data[where:where + 1]
        elif action == "replace" and where < len(data):
            data[where] = byte
        else:
            data.insert(where, byte)
    return bytes(data)


def _remove_created(target: Target, status: int, data: bytes) -> None:
    if status == 201:
        cid = json.loads(data)["Id"]
        http_request(target.agent.socket, "DELETE", f"{API}/containers/{cid}?force=1")


# --------------------------------------------------------------------------- bodies

# Regressions from the create body's side (runtime/containers/schema.py). Before the schema
# (main 50feee6) the first group answered 500 (TypeError, ValueError, AttributeError: a
# wrong type reached the engine) and the second was stored as given; all must stay 4xx.
CREATE_REGRESSIONS: list[Any] = [
    {"Image": "IMAGE", "Cmd": 5},
    {"Image": "IMAGE", "HostConfig": {"Memory": "1g"}},
    {"Image": "IMAGE", "HostConfig": {"PortBindings": {"80/tcp": "8080"}}},
    {"Image": "IMAGE", "HostConfig": {"Binds": [5]}},
    {"Image": "IMAGE", "HostConfig": {"RestartPolicy": "always"}},
    {"Image": "IMAGE", "ExposedPorts": ["80/tcp"]},
    {"Image": "IMAGE", "Cmd": [""], "ExposedPorts": [None]},   # found by test_create_fuzz
    # stored as given:
    {"Image": "IMAGE", "Env": "x"},
    {"Image": "IMAGE", "HostConfig": []},
    {"Image": "IMAGE", "Labels": {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},
    {"Image": "IMAGE", "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1e300}},
    {"Image": "IMAGE", "Cmd": ["true"], "StopTimeout": 1 << 70},
    # refused before too; kept as the edges of the same field
    {"Image": "IMAGE", "WorkingDir": "relative"},
    {"Image": "Bad:Ref!!"},
    {"Image": 5},
    {"Image": ["busybox"]},
    {"Image": ""},
    {},
]


def _with_image(body: Any, image: str) -> Any:
    return json.loads(json.dumps(body).replace('"IMAGE"', json.dumps(image)))


@pytest.mark.parametrize("body", CREATE_REGRESSIONS, ids=[json.dumps(b)[:60] for b in CREATE_REGRESSIONS])
def test_create_regressions_are_4xx(target: Target, body: Any) -> None:
    status, data = target.request("create", "POST", "/containers/create",
                                  json.dumps(_with_image(body, target.image)).encode())
    _remove_created(target, status, data)
    assert_client_answer(status, data, f"create {body}")
    target.check_alive()


def test_create_fuzz(target: Target) -> None:
    @settings(FUZZ, max_examples=200)
    @given(valid=valid_create_bodies(target.image), mutated=mutated_create_bodies(target.image),
           use_valid=st.integers(0, 3).map(lambda n: n == 0))
    def run(valid: dict[str, Any], mutated: Any, use_valid: bool) -> None:
        body = valid if use_valid else mutated
        status, data = target.request("create", "POST", "/containers/create", json.dumps(body).encode())
        _remove_created(target, status, data)
        if use_valid:
            assert status == 201, f"valid body {body} answered {status} {data[:300]!r}"
        elif status != 201:
            assert_client_answer(status, data, f"create {body!r:.300}")
        target.check_alive()

    run()


def test_create_text_fuzz(target: Target) -> None:
    @settings(FUZZ, max_examples=60)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        body = data.draw(mutated_json_text({"Image": target.image, "Cmd": ["true"],
                                            "HostConfig": {"Memory": 0, "Binds": []}}))
        status, answer = target.request("create", "POST", "/containers/create", body)
        _remove_created(target, status, answer)
        if status != 201:
            assert_client_answer(status, answer, f"create {body!r}")
        target.check_alive()

    run()


START_BODIES = st.one_of(st.binary(max_size=12), JSON_VALUES.map(lambda v: json.dumps(v).encode()))


def test_start_fuzz(target: Target) -> None:
    """A start body of 7 bytes or less is ignored, as by dockerd; a longer one is a 400."""
    @settings(FUZZ, max_examples=40)
    @given(body=START_BODIES)
    @example(body=b"{}")
    @example(body=b'{"Binds": ["/:/host"]}')
    def run(body: bytes) -> None:
        status, data = target.request("start", "POST", f"/containers/{target.stopped}/start", body)
        if status not in (204, 304):   # started, or still running from the previous example
            assert_client_answer(status, data, f"start {body!r}")
        target.check_alive()

    run()


VALID_EXEC = st.fixed_dictionaries({"Cmd": st.just(["true"])}, optional={
    "Env": st.lists(ENV_NAME.map(lambda k: k + "=1"), max_size=2), "Tty": st.booleans(),
    "AttachStdout": st.booleans(), "AttachStderr": st.booleans(), "Privileged": st.just(False),
    "WorkingDir": st.just("/"), "User": st.sampled_from(["", "root", "0"])})
EXEC_KEYS = ["Cmd", "Env", "User", "WorkingDir", "Tty", "AttachStdin", "AttachStdout",
             "AttachStderr", "Privileged", "DetachKeys", "ConsoleSize", "cmd"]


@st.composite
def mutated_exec_bodies(draw: st.DrawFn) -> bytes:
    body: Any = dict(draw(VALID_EXEC))
    for key in draw(st.lists(st.sampled_from(EXEC_KEYS), min_size=1, max_size=3)):
        body[key] = draw(JSON_VALUES)
    if draw(st.integers(0, 9)) == 0:
        body = draw(JSON_VALUES)
    if draw(st.integers(0, 4)) == 0:
        return draw(mutated_json_text(body))
    return json.dumps(body).encode()


def test_exec_create_fuzz(target: Target) -> None:
    @settings(FUZZ, max_examples=80)
    @given(valid=VALID_EXEC, mutated=mutated_exec_bodies(), use_valid=st.booleans())
    @example(valid={"Cmd": ["true"]}, mutated=b'{"Cmd": "true"}', use_valid=False)
    @example(valid={"Cmd": ["true"]}, mutated=b"[" * 50000, use_valid=False)
    def run(valid: dict[str, Any], mutated: bytes, use_valid: bool) -> None:
        body = json.dumps(valid).encode() if use_valid else mutated
        status, data = target.request("exec", "POST", f"/containers/{target.running}/exec", body)
        if use_valid:
            assert status == 201, f"valid exec {valid} answered {status} {data[:300]!r}"
        elif status != 201:
            assert_client_answer(status, data, f"exec create {body[:300]!r}")
        target.check_alive()

    run()


START_EXEC_KEYS = ["Detach", "Tty", "ConsoleSize", "detach"]


def test_exec_start_fuzz(target: Target) -> None:
    """Random start bodies for a fresh, valid exec instance each time."""
    @settings(FUZZ, max_examples=40)
    @given(detach=st.booleans(), extra=st.dictionaries(st.sampled_from(START_EXEC_KEYS), JSON_VALUES,
                                                        max_size=2), raw=st.none() | st.binary(max_size=10))
    @example(detach=True, extra={"ConsoleSize": [-1, 5]}, raw=None)
    @example(detach=True, extra={"ConsoleSize": "x"}, raw=None)
    def run(detach: bool, extra: dict[str, Any], raw: bytes | None) -> None:
        status, data = target.request("exec", "POST", f"/containers/{target.running}/exec",
                                      json.dumps({"Cmd": ["true"]}).encode())
        assert status == 201, data
        exec_id = json.loads(data)["Id"]
        body = raw if raw is not None else json.dumps({"Detach": detach, **extra}).encode()
        status, data = target.request("exec", "POST", f"/exec/{exec_id}/start", body)
        if not 200 <= status < 300:
            assert_client_answer(status, data, f"exec start {body!r}")
        target.check_alive()

    run()


def test_build_is_a_clean_refusal(target: Target) -> None:
    """POST /build is not implemented: 501 (or a 4xx) with a JSON message, whatever is sent."""
    @settings(FUZZ, max_examples=30)
    @given(body=st.binary(max_size=200), query=st.dictionaries(
        st.sampled_from(["t", "dockerfile", "q", "nocache", "buildargs", "memory", "remote"]),
        st.text(max_size=10), max_size=3))
    def run(body: bytes, query: dict[str, str]) -> None:
        from urllib.parse import urlencode
        status, data = target.request("build", "POST", "/build?" + urlencode(query), body,
                                      {"Content-Type": "application/x-tar"})
        assert status == 501 or 400 <= status < 500, f"build: {status} {data[:300]!r}"
        assert isinstance(json.loads(data).get("message"), str)
        target.check_alive()

    run()


# --------------------------------------------------------------------------- raw HTTP


def _exchange(target: Target, raw: bytes) -> bytes:
    """Send `raw`, end the sending side, and read everything the agent answers."""
    CASES["raw HTTP"] += 1
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)   # a deadline: the agent must answer and close long before
    try:
        sock.connect(str(target.agent.socket))
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the agent refused early (a too-long line) and closed: its answer is still readable
        out = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                return out
            out += data
        return out
    finally:
        sock.close()


def _statuses(answer: bytes) -> list[int]:
    """The status codes of the responses in `answer` (heads found by their status line)."""
    statuses = []
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 "):
            statuses.append(int(line.split()[1]))
    return statuses


METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"DELETE", b"PUT", b"get", b"", b"P\x00ST"])
PATHS = st.sampled_from([b"/_ping", b"/v1.45/containers/json", b"/v1.45/containers/create",
                         b"/v9.99/_ping", b"/v1.45/../../etc/passwd", b"*", b"http://x/_ping",
                         b"/v1.45/containers/%00/json", b"/v1.45/images/%ff%fe/json",
                         b"/v1.45/containers/json?limit=abc&filters=%7B", b"/" + b"a" * 70000])
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 extra", b"", b"HTTP/x"])
HEADER_LINES = st.one_of(
    st.sampled_from([b"Host: x", b"Content-Type: application/json", b"Connection: close",
                     b"Content-Length: -1", b"Content-Length: abc", b"Content-Length: 99999999999999999999",
                     b"Content-Length: 3", b"Content-Length: 1_0", b"Transfer-Encoding: chunked",
                     b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked, gzip", b"no colon",
                     b" folded: x", b": empty name", b"X-Registry-Auth: !!!", b"Upgrade: tcp"]),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b),
    st.integers(60000, 70000).map(lambda n: b"X-Big: " + b"a" * n))
CHUNKED_BODIES = st.one_of(
    st.sampled_from([b"2\r\n{}\r\n0\r\n\r\n", b"zz\r\n{}\r\n0\r\n\r\n", b"-2\r\n{}\r\n0\r\n\r\n",
                     b"ffffffffffffffffff\r\n", b"2\r\n{}XX0\r\n\r\n", b"8\r\n{}", b"2\r\n{}\r\n",
                     b"0\r\nTrailer: x\r\n", b"2;ext=1\r\n{}\r\n0\r\n\r\n", b"7fffffff\r\nab"]),
    st.binary(max_size=40))


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    line = b" ".join(part for part in (draw(METHODS), draw(PATHS), draw(VERSIONS)))
    if draw(st.integers(0, 7)) == 0:
        line = draw(st.binary(max_size=60)).replace(b"\n", b"")
    headers = draw(st.lists(HEADER_LINES, max_size=6))
    if draw(st.integers(0, 15)) == 0:
        headers += [b"X-Many: y"] * 120
    body = draw(CHUNKED_BODIES | st.binary(max_size=40))
    if draw(st.booleans()):   # a length near the body's: exact, short, or more than is sent
        headers.append(b"Content-Length: %d" % (len(body) + draw(st.integers(-3, 5))))
    raw = line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
    if draw(st.integers(0, 5)) == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]   # cut anywhere
    return raw


def test_raw_http_fuzz(target: Target) -> None:
    """Every response is a 4xx, a 501 for an unknown transfer coding, or the answer of a
    request that happened to be valid; a request that is not just blank lines gets one."""
    @settings(FUZZ, max_examples=300)
    @given(raw=raw_requests())
    @example(raw=b"POST /v1.45/containers/create HTTP/1.1\r\nContent-Length: -1\r\n\r\n{}")
    @example(raw=b"POST /v1.45/containers/create HTTP/1.1\r\nContent-Length: 50\r\n\r\n{}")
    @example(raw=b"POST /v1.45/containers/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    @example(raw=b"GET /_ping HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n")
    def run(raw: bytes) -> None:
        answer = _exchange(target, raw)
        statuses = _statuses(answer)
        assert all(s < 500 or s == 501 for s in statuses), f"{raw[:300]!r} -> {answer[:500]!r}"
        if raw.strip(b"\r\n"):
            assert statuses, f"no answer to {raw[:300]!r}"
        target.check_alive()

    run()
