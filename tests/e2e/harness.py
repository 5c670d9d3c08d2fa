"""Real processes for the end-to-end tests and the benchmark: Daphne, Celery workers, and clients.

Nothing here is faked: the web server and workers are the production entry points, started as
subprocesses against PostgreSQL and Redis, and the clients speak HTTP, SSE and WebSocket.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import redis
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"run.completed", "run.failed", "run.interrupted"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(db_settings: dict[str, Any]) -> str:
    if db_settings["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db_settings['NAME']}"
    user = quote(db_settings.get("USER") or "postgres")
    password = f":{quote(db_settings['PASSWORD'])}" if db_settings.get("PASSWORD") else ""
    host = db_settings.get("HOST") or "127.0.0.1"
    port = db_settings.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db_settings['NAME']}"


def wait_for_quiet_database(url: str, timeout: float = 5.0, runs_timeout: float = 20.0) -> bool:
    """Wait until no run is executing and no other session on the database is inside a transaction;
    False if that moment did not come.

    The platform's processes go on writing after a test has seen what it waited for (a run the test
    decided but did not watch to its end, a run's last workspace save, a reaper's round); the flush that
    ends a test then takes every table at once, and a transaction holding one of them while it waits
    for another deadlocks it.
    """
    with psycopg.connect(url, autocommit=True) as quiet:
        deadline = time.monotonic() + runs_timeout
        while time.monotonic() < deadline:
            running = quiet.execute("SELECT count(*) FROM conversations_run WHERE status = 'running'").fetchone()
            if not running or not running[0]:
                break
            time.sleep(0.05)
        deadline = time.monotonic() + timeout
        while True:
            busy = quiet.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
            ).fetchone()
            if not busy or not busy[0]:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def sandbox_reachable_dir() -> str:
    """A RUN_ROOT the sandbox user can reach (pytest's own temp dirs are private to root)."""
    path = tempfile.mkdtemp(prefix="agent-runs-")
    os.chmod(path, 0o711)  # noqa: S103 - traversable, not listable, as a production RUN_ROOT
    return path


class RedisServer:
    """A private redis-server on a free loopback port, for tests that kill and restart Redis.

    Never the shared Redis: other tests and processes rely on that one. Like a default install, it
    keeps nothing on disk, so a restart also forgets every group membership and queued message.
    """

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = work_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        executable = shutil.which("redis-server")
        assert executable, "redis-server is not installed"
        self.process = subprocess.Popen(
            [executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no goodbye to any client."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class S3Server:
    """moto's S3 in server mode on a free loopback port: the storage code talks to it over HTTP, as to AWS."""

    BUCKET = "agent-platform-e2e"

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / f"s3-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The platform's settings for this S3 (made-up keys: moto accepts any)."""
        return {
            "AWS_STORAGE_BUCKET_NAME": self.BUCKET,
            "AWS_S3_ENDPOINT_URL": self.url,
            "AWS_S3_ACCESS_KEY_ID": "e2e-access-key",
            "AWS_S3_SECRET_ACCESS_KEY": "e2e-secret-key",
            "AWS_S3_REGION_NAME": "us-east-1",
        }

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.client().create_bucket(Bucket=self.BUCKET)
                return
            except Exception:  # not listening yet
                time.sleep(0.1)
        raise RuntimeError(f"moto's S3 did not start; see {self.log_path}")

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="e2e-access-key",
            aws_secret_access_key="e2e-secret-key",
            region_name="us-east-1",
        )

    def objects(self, prefix: str = "") -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.BUCKET, Prefix=prefix)
        return [item["Key"] for item in listing.get("Contents", [])]

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class PostgresServer:
    """A private PostgreSQL cluster on a free loopback port, for tests that restart PostgreSQL.

    Never the shared cluster: other tests and processes rely on it. Its directory belongs to the
    `postgres` user, which runs the server when the tests run as root (PostgreSQL refuses root).
    """

    @staticmethod
    def available() -> bool:
        return bool(list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))) and bool(shutil.which("runuser"))

    def __init__(self) -> None:
        self.port = free_port()
        self.bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="agent-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/agent_platform"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def create(self) -> None:
        """initdb, start, and an empty `agent_platform` database."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE agent_platform")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "server.log"), "-w", "start")

    def stop(self) -> None:
        """An immediate shutdown, as a crash or a failover: every client loses its connection."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Platform:
    """Daphne and Celery workers sharing one database, Redis and run queue."""

    def __init__(self, database_url: str, redis_url: str, work_dir: Path, **extra_env: str) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "RUN_QUEUE": f"e2e-{os.getpid()}-{self.port}",
            "RUN_ROOT": sandbox_reachable_dir(),
            "MEDIA_ROOT": str(work_dir / "media"),
            "DEBUG": "1",
            "RUN_HEARTBEAT_SECONDS": "0.5",
            "RUN_STALE_AFTER_SECONDS": "3",
            "SSE_HEARTBEAT_SECONDS": "2",
            # MCP servers the tests start listen on 127.0.0.2; stdio servers are Python scripts.
            "EGRESS_ALLOWED_NETWORKS": "127.0.0.2/32",
            "MCP_STDIO_COMMANDS": "python3=/usr/bin/python3",
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        self.web: subprocess.Popen[bytes] | None = None
        self.other_webs: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.run_roots = [self.env["RUN_ROOT"]]

    def _spawn(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = open(self.work_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        # A session of its own, so a kill reaches the whole process tree (prefork children, CLIs).
        return subprocess.Popen(
            args, cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_web(self) -> None:
        self.web = self._serve("daphne", self.port)

    def start_another_web(self, name: str) -> str:
        """One more Daphne on the same database, Redis and queue, as on another host; its base URL."""
        port = free_port()
        self.other_webs.append(self._serve(name, port))
        return f"http://127.0.0.1:{port}"

    def _serve(self, name: str, port: int) -> subprocess.Popen[bytes]:
        web = self._spawn(
            name,
            [sys.executable, "-m", "config.serve", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return web
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"Daphne did not start; see {self.work_dir / f'{name}.log'}")

    def start_worker(self, name: str = "worker", concurrency: int = 2, **env: str) -> subprocess.Popen[bytes]:
        """A Celery worker; `env` overrides this worker's environment (e.g. its own RUN_ROOT, removed at stop)."""
        if "RUN_ROOT" in env:
            self.run_roots.append(env["RUN_ROOT"])
        log_path = self.work_dir / f"{name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        worker = self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                self.env["RUN_QUEUE"],
                "-c",
                str(concurrency),
                "-n",
                f"{name}-{self.port}@%h",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "info",
            ],
            **env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b"ready." in log_path.read_bytes()[offset:]:
                self.workers.append(worker)
                return worker
            if worker.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"Celery worker did not start; see {log_path}")

    def node_name(self, name: str) -> str:
        """The Celery node name of the worker started as `name` (the `-n` of start_worker)."""
        return f"{name}-{self.port}@{socket.gethostname()}"

    @staticmethod
    def lease_name(worker: subprocess.Popen[bytes]) -> str:
        """What a run's `worker` field and `run.started.data.worker` say for runs of this worker (runs.lease)."""
        return f"{socket.gethostname()}:{worker.pid}"

    def consume(self, name: str, on: bool, queue: str = "") -> None:
        """Have the worker started as `name` take runs from `queue` (the shared one by default; a worker's own is
        `warm_queue(worker)`) again (on) or stop taking new ones (off), through Celery's remote control, so that a
        test can choose which of several workers takes the next run.

        A worker that stops consuming keeps the runs it holds; a message its last poll took is handed back."""
        from celery import Celery

        control = Celery(broker=self.env["CELERY_BROKER_URL"]).control
        queue, node = queue or self.env["RUN_QUEUE"], self.node_name(name)
        if on:
            replies = control.add_consumer(queue, destination=[node], reply=True, timeout=5)
        else:
            replies = control.cancel_consumer(queue, destination=[node], reply=True, timeout=5)
        assert replies and node in replies[0], f"worker {node} did not answer: {replies}"

    def warm_queue(self, worker: subprocess.Popen[bytes]) -> str:
        """The worker's own queue: where the runs of conversations it keeps warm go (runs.lease.warm_queue)."""
        from runs.lease import warm_queue

        return warm_queue(f"{self.env['RUN_QUEUE']}/{self.lease_name(worker)}")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a process and everything it started, as a crash or OOM kill would."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)
        if process in self.workers:
            self.workers.remove(process)

    def terminate(self, process: subprocess.Popen[bytes], kill_after: float = 30) -> float:
        """SIGTERM a worker's main process alone, as `docker stop` and Kubernetes do (to the container's PID 1), and
        SIGKILL what is left of it after `kill_after` seconds, as they do; the seconds it took to exit by itself."""
        began = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(kill_after)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - began
        self.kill(process)  # the rest of its tree, as a container's end takes it
        return took

    def logs(self) -> str:
        """Everything the platform's processes have logged so far."""
        return "".join(path.read_text(errors="replace") for path in self.work_dir.glob("*.log"))

    def stop(self) -> None:
        for process in [*self.workers, *([self.web] if self.web else []), *self.other_webs]:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill(process)
        self.workers.clear()
        self.other_webs.clear()
        for run_root in self.run_roots:
            shutil.rmtree(run_root, ignore_errors=True)


@contextmanager
def serving_embedded(database_url: str, work_dir: Path) -> Iterator[Platform]:
    """Daphne alone on `make run`'s embedded defaults: a SQLite file, no Redis (the in-memory channel
    layer), no broker (runs in a thread of the web process)."""
    platform = Platform(database_url, "", work_dir)
    try:
        platform.start_web()
        yield platform
    finally:
        platform.stop()


@contextmanager
def serving(
    database_url: str, redis_url: str, work_dir: Path, concurrency: int = 2, **extra_env: str
) -> Iterator[Platform]:
    """A Platform with Daphne and one Celery worker (of `concurrency` threads) up, stopped at the end of the block."""
    platform = Platform(database_url, redis_url, work_dir, **extra_env)
    try:
        platform.start_web()
        platform.start_worker(concurrency=concurrency)
        yield platform
    finally:
        platform.stop()


class Client:
    """A tenant's client application: REST with its API key, plus WebSocket and SSE readers."""

    def __init__(self, base_url: str, tenant: str, key: str) -> None:
        self.base_url = base_url
        self.tenant = tenant
        self.http = httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30)

    def path(self, conversation_id: str = "", suffix: str = "") -> str:
        base = f"/api/tenants/{self.tenant}/conversations"
        return f"{base}/{conversation_id}{suffix}" if conversation_id else base

    def create_conversation(self, **body: Any) -> str:
        response = self.http.post(self.path(), json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def send(self, conversation_id: str, text: str) -> dict[str, Any]:
        response = self.http.post(self.path(conversation_id, "/messages"), json={"text": text})
        assert response.status_code == 202, response.text
        return response.json()

    def interrupt(self, conversation_id: str) -> httpx.Response:
        return self.http.post(self.path(conversation_id, "/interrupt"))

    def events(self, conversation_id: str, after: int = 0) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while True:
            page = self.http.get(self.path(conversation_id, "/events"), params={"after": after, "limit": 1000}).json()
            events += page["events"]
            after = page["next_after"]
            if not page["has_more"]:
                return events

    def wait_for_terminal(self, conversation_id: str, run_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(conversation_id):
                if event["run_id"] == run_id and event["type"] in TERMINAL:
                    return event
            time.sleep(0.1)
        raise TimeoutError(f"run {run_id} did not end within {timeout}s")

    def stream_token(self, conversation_id: str) -> str:
        response = self.http.post(self.path(conversation_id, "/stream-token"))
        assert response.status_code == 201, response.text
        return response.json()["token"]

    @contextmanager
    def websocket(self, conversation_id: str, after: int = 0, token: str | None = None) -> Iterator[ClientConnection]:
        token = token or self.stream_token(conversation_id)
        url = (
            self.base_url.replace("http", "ws", 1)
            + f"/ws/tenants/{self.tenant}/conversations/{conversation_id}/?after={after}&token={token}"
        )
        with connect(url, open_timeout=10, max_size=None) as socket_:
            yield socket_

    @contextmanager
    def sse(
        self, conversation_id: str, after: int = 0, last_event_id: int | None = None
    ) -> Iterator[Iterator[dict[str, Any]]]:
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        with self.http.stream(
            "GET",
            self.path(conversation_id, "/events/stream"),
            params={"after": after},
            headers=headers,
            timeout=httpx.Timeout(30, read=60),
        ) as response:
            assert response.status_code == 200, response.read()
            yield sse_events(response.iter_lines())


def tenant_client(base_url: str, tenant_id: str) -> Client:
    """A new tenant on the offline model, and its client application with a fresh API key."""
    from tenants.models import ApiKey, Tenant
    from tenants.services import ensure_offline_model

    tenant = Tenant.objects.create(id=tenant_id, name=tenant_id.title(), default_model=ensure_offline_model())
    return Client(base_url, tenant.pk, ApiKey.issue("e2e", tenant=tenant)[1])


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse SSE lines into event envelopes, checking that `id:` equals the envelope's seq."""
    event_id = None
    for line in lines:
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            envelope = json.loads(line[6:])
            assert envelope["seq"] == event_id, (envelope["seq"], event_id)
            yield envelope


def read_ws_until_terminal(socket_: ClientConnection, run_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(socket_.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if "seq" not in frame:
            continue
        events.append(frame)
        if frame["run_id"] == run_id and frame["type"] in TERMINAL:
            return events
