"""Fixtures for the client's tests: a real ckptd, and nginx terminating TLS.

daemon (one per session) runs build/ckptd from the repository root (or
$CKPTD_BIN) on a free 127.0.0.1 port with a temporary data directory, waits
for /healthz, and at the end stops it with SIGTERM and checks that it exits 0.
start_daemon starts more of them (with flags, e.g. --token-file) for one
test. tls puts nginx in front of the session's daemon: a self-signed
certificate made by `openssl req -x509` for 127.0.0.1, TLS terminated by
nginx, the requests proxied unbuffered (chunked uploads stream through).
Each process's log is printed when it fails to start or stop.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import pytest

HERE = Path(__file__).resolve().parent
CLIENT_DIR = HERE.parent
REPO = CLIENT_DIR.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # A server must not outlive a test process that was killed.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return "(no log: %s)" % e


def ckptd_binary() -> Path:
    b = Path(os.environ.get("CKPTD_BIN") or REPO / "build" / "ckptd")
    if not os.access(b, os.X_OK):
        pytest.fail("%s is missing: run make in the repository root first" % b, pytrace=False)
    return b


class Daemon:
    """One `ckptd serve` process on 127.0.0.1."""

    def __init__(self, workdir: Path, args: Sequence[str] = (), name: str = "ckptd") -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.log = workdir / (name + ".log")
        self.args = list(args)
        self.port = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout: float = 20) -> Daemon:
        why = ""
        for _ in range(3):  # another process may take the free port first
            self.port = free_port()
            cmd = [str(ckptd_binary()), "serve", "--listen", "127.0.0.1:%d" % self.port,
                   "--data", str(self.data)] + self.args
            with open(self.log, "ab") as log:
                log.write(("$ %s\n" % " ".join(cmd)).encode())
                log.flush()
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL,
                                             preexec_fn=_die_with_parent)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    why = "ckptd exited with %d during start" % self.proc.returncode
                    break
                try:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                    c.request("GET", "/api/v1/healthz")
                    r = c.getresponse()
                    r.read()
                    c.close()
                    if r.status in (200, 401, 403):  # it answers (401 under --auth-read)
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            else:
                why = "ckptd did not answer /healthz within %ds" % timeout
                self.proc.kill()
                self.proc.wait()
                break
            if "in use" not in _tail(self.log, 5).lower():
                break
        raise RuntimeError("%s\n--- %s ---\n%s" % (why, self.log, _tail(self.log)))

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then its exit status (it is killed after timeout s)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("ckptd did not exit within %ds of SIGTERM\n%s"
                                   % (timeout, _tail(self.log)))
        return int(self.proc.returncode)

    def stop_checked(self) -> None:
        rc = self.stop()
        assert rc == 0, "ckptd exited with %d\n%s" % (rc, _tail(self.log))


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ckptd")).start()
    yield d
    d.stop_checked()


@pytest.fixture
def url(daemon: Daemon) -> str:
    return daemon.url


@pytest.fixture
def start_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Daemon]]:
    """start_daemon(args=[...]) -> a started Daemon, stopped (and checked) after the test."""
    started: List[Daemon] = []

    def start(args: Sequence[str] = (), name: str = "ckptd") -> Daemon:
        d = Daemon(tmp_path_factory.mktemp(name), args, name)
        started.append(d.start())
        return d

    yield start
    for d in started:
        d.stop_checked()


class Nginx:
    """nginx terminating TLS on 127.0.0.1 with a self-signed certificate,
    proxying to upstream_port without buffering requests or answers."""

    def __init__(self, workdir: Path, upstream_port: int) -> None:
        self.dir = workdir
        self.upstream_port = upstream_port
        self.cafile = workdir / "cert.pem"
        self.key = workdir / "key.pem"
        self.log = workdir / "error.log"
        self.port = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return "https://127.0.0.1:%d" % self.port

    def make_certificate(self) -> None:
        openssl = shutil.which("openssl")
        if not openssl:
            pytest.fail("openssl is missing (apt-get install openssl)", pytrace=False)
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-keyout", str(self.key), "-out", str(self.cafile), "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
             "-addext", "extendedKeyUsage=serverAuth"],
            check=True, capture_output=True, timeout=60)

    def config(self) -> str:
        d = self.dir
        # As root, nginx's workers would run as nobody, who cannot enter the
        # test's private temporary directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        return f"""{user}worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        ssl_certificate {self.cafile};
        ssl_certificate_key {self.key};
        client_max_body_size 0;
        location / {{
            proxy_pass http://127.0.0.1:{self.upstream_port};
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"""

    def start(self, timeout: float = 20) -> Nginx:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(nginx, os.X_OK):
            pytest.fail("nginx is missing (apt-get install nginx-light)", pytrace=False)
        self.make_certificate()
        why = ""
        for _ in range(3):
            self.port = free_port()
            conf = self.dir / "nginx.conf"
            conf.write_text(self.config())
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [nginx, "-p", str(self.dir), "-c", str(conf), "-e", str(self.log),
                     "-g", "daemon off; pid %s/nginx.pid;" % self.dir],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    why = "nginx exited with %d during start" % self.proc.returncode
                    break
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            else:
                why = "nginx did not listen within %ds" % timeout
                self.proc.kill()
                self.proc.wait()
                break
            if "in use" not in _tail(self.log, 5):
                break
        raise RuntimeError("%s\n--- %s ---\n%s" % (why, self.log, _tail(self.log)))

    def stop(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("nginx did not exit within 10 s of SIGTERM")


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory, daemon: Daemon) -> Iterator[Nginx]:
    n = Nginx(tmp_path_factory.mktemp("nginx"), daemon.port).start()
    yield n
    n.stop()
