"""A real Debian `docker-registry` (distribution 2.8) on 127.0.0.1 for tests.

`start_registry(workdir)` runs the registry with filesystem storage in
`workdir`, on a free port, and waits until `/v2/` answers. Optional auth:

* ``auth="basic"``: an htpasswd file made with `htpasswd -Bbn` (bcrypt).
* ``auth="token"``: a small token server of our own (a thread in this
  process) issues RS256 JWTs signed with a key and self-signed certificate
  generated here with `cryptography`; the registry trusts that certificate
  through `rootcertbundle`. The token server only accepts the test
  credentials, so wrong or missing credentials give 401 from the realm.

Test-only code: it may use `cryptography` from the venv.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import logging
import os
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.support.processes import free_port, stop_process

log = logging.getLogger(__name__)

TEST_USER = "dockyard"
TEST_PASSWORD = "s3cret-pass"
TOKEN_SERVICE = "dockyard-test-registry"
TOKEN_ISSUER = "dockyard-test-issuer"



def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """An in-process Docker token server (the `realm` of Bearer auth)."""

    username: str
    password: str
    key_pem: bytes
    cert_der: bytes
    httpd: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None
    issued: list[dict] = field(default_factory=list)   # claims of every token issued
    withheld: set[str] = field(default_factory=set)    # repositories no token grants access to

    @property
    def realm(self) -> str:
        assert self.httpd is not None
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/token"

    def make_token(self, subject: str, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or ":".join(parts[1:-1]) in self.withheld:
                continue
            access.append({"type": parts[0], "name": ":".join(parts[1:-1]),
                           "actions": [a for a in parts[-1].split(",") if a]})
        now = int(time.time())
        claims = {"iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE,
                  "exp": now + 3600, "nbf": now - 60, "iat": now - 60,
                  "jti": secrets.token_hex(8), "access": access}
        self.issued.append(claims)
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert_der).decode()]}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: object) -> None:  # quiet test output
                log.debug("token server: " + fmt, *args)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                auth = self.headers.get("Authorization", "")
                user = ""
                if auth.startswith("Basic "):
                    try:
                        user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                    except ValueError:
                        user, pw = "", ""
                    if user != server.username or pw != server.password:
                        return self._reply(401, {"details": "incorrect username or password"})
                else:
                    return self._reply(401, {"details": "authentication required"})
                if url.path != "/token" or query.get("service", [""])[0] != TOKEN_SERVICE:
                    return self._reply(400, {"details": "bad service"})
                token = server.make_token(user, query.get("scope", []))
                self._reply(200, {"token": token, "access_token": token, "expires_in": 3600})

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="token-server",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def _make_signing_cert(workdir: Path) -> tuple[bytes, bytes, Path]:
    """An RSA key and a self-signed CA certificate; returns (key PEM, cert DER, bundle path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockyard test token issuer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    bundle = workdir / "token-ca.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.DER), bundle


@dataclass
class RunningRegistry:
    """A registry process; `.host` is "127.0.0.1:PORT" (what image references use)."""

    host: str
    workdir: Path
    process: subprocess.Popen
    auth: str | None = None
    username: str = ""
    password: str = ""
    token_server: TokenServer | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    def stop(self) -> None:
        stop_process(self.process)
        if self.token_server is not None:
            self.token_server.stop()

    def __enter__(self) -> RunningRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _config_yaml(data_dir: Path, port: int, auth_block: str) -> str:
    # JSON is valid YAML, so the config is written without a YAML library.
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data_dir}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secrets.token_hex(16)}
{auth_block}"""


def _answers(host: str) -> bool:
    conn = http.client.HTTPConnection(host, timeout=2)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status in (200, 401)
    except OSError:
        return False
    finally:
        conn.close()


def start_registry(workdir: Path, auth: str | None = None, timeout: float = 30.0) -> RunningRegistry:
    """Start `docker-registry serve` on 127.0.0.1:<free port>; return once `/v2/` answers."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    auth_block = ""
    username = password = ""
    token_server = None
    if auth == "basic":
        username, password = TEST_USER, TEST_PASSWORD
        line = subprocess.run(["htpasswd", "-Bbn", username, password], check=True,
                              capture_output=True, text=True).stdout.strip()
        (workdir / "htpasswd").write_text(line + "\n")
        auth_block = (f"auth:\n  htpasswd:\n    realm: dockyard-test\n"
                      f"    path: {workdir / 'htpasswd'}\n")
    elif auth == "token":
        username, password = TEST_USER, TEST_PASSWORD
        key_pem, cert_der, bundle = _make_signing_cert(workdir)
        token_server = TokenServer(username, password, key_pem, cert_der)
        token_server.start()
        auth_block = (f"auth:\n  token:\n    realm: {token_server.realm}\n"
                      f"    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n"
                      f"    rootcertbundle: {bundle}\n")
    elif auth is not None:
        raise ValueError(f"unknown registry auth mode {auth!r} (use None, 'basic' or 'token')")

    last_error = ""
    for _attempt in range(5):   # the free port may be taken between probe and bind
        port = free_port()
        config = workdir / "config.yml"
        config.write_text(_config_yaml(workdir / "data", port, auth_block))
        log_path = workdir / "registry.log"
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                    stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, "HOME": str(workdir)})
        host = f"127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(host):
                return RunningRegistry(host=host, workdir=workdir, process=proc, auth=auth,
                                       username=username, password=password,
                                       token_server=token_server, log_path=log_path)
            time.sleep(0.02)   # poll interval while waiting for the port to answer
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        last_error = log_path.read_text(errors="replace")[-2000:]
    if token_server is not None:
        token_server.stop()
    raise RuntimeError(f"docker-registry did not start: {last_error}")


class FaultyProxy:
    """A real HTTP proxy in front of a registry that breaks blob downloads on purpose.

    `mode="cut"`: the first `faults` blob GETs send the full headers but only
    half of the body, then close the socket (a broken connection).
    `mode="corrupt"`: blob bodies have one byte flipped (a digest mismatch).
    `mode="pass"`: no faults, only the record (to see how a client talks).
    Requests are forwarded with their headers (Range, Authorization, Accept) and
    bodies (uploads), so resumption, auth and pushes go through it. `requests`
    records (method, path, Range or Content-Range header) of every request seen.
    """

    def __init__(self, upstream: str, mode: str = "cut", faults: int = 1) -> None:
        self.upstream = upstream
        self.mode = mode
        self.faults_left = faults
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("proxy: " + fmt, *args)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
                self._forward(send_body=False)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                self._forward(send_body=True)

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                self._forward(send_body=True)

            def do_PUT(self) -> None:  # noqa: N802 (http.server naming)
                self._forward(send_body=True)

            def do_PATCH(self) -> None:  # noqa: N802 (http.server naming)
                self._forward(send_body=True)

            def _forward(self, send_body: bool) -> None:
                proxy.requests.append((self.command, self.path, self.headers.get("Range", "")
                                       or self.headers.get("Content-Range", "")))
                length = int(self.headers.get("Content-Length") or 0)
                request_body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream
                conn.request(self.command, self.path, body=request_body, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                fault = False
                if "/blobs/sha256:" in self.path and self.command == "GET" and resp.status in (200, 206):
                    with proxy._lock:
                        if proxy.mode == "corrupt":
                            fault = True
                        elif proxy.faults_left > 0 and len(body) > 1:
                            proxy.faults_left -= 1
                            fault = True
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not send_body:
                    return
                if fault and proxy.mode == "corrupt":
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
                if fault and proxy.mode == "cut":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="faulty-proxy",
                                       daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host}:{port}"

    def blob_gets(self) -> list[tuple[str, str, str]]:
        return [r for r in self.requests if r[0] == "GET" and "/blobs/" in r[1]]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
