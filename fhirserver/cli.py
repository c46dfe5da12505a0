"""`fhirserver` command line: serve, migrate, generate, client, user, keys, audit."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from fhirserver.config import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    for name in ("host", "port", "data_dir", "ssl_certfile", "ssl_keyfile"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "no_demo", False):
        overrides["demo"] = False
    return Settings(**overrides)  # type: ignore[arg-type]


def data_dir_in_use(data_dir: Path) -> bool:
    """True when another process holds the data directory's lock."""
    lock = data_dir / "fhirserver.lock"
    if not lock.exists():
        return False
    with lock.open("a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


class GracefulServer(uvicorn.Server):
    """Drains requests and runs the lifespan shutdown on SIGTERM/SIGINT, then exits 0.

    Stock uvicorn re-raises the signal after a clean shutdown, so the process would
    report death-by-signal even though nothing was lost.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start the graceful shutdown without re-raising the signal afterwards."""
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP server until SIGINT/SIGTERM, then shut down cleanly."""
    from fhirserver.api.observability import configure_logging
    from fhirserver.app import server_config

    settings = _settings(args)
    if settings.mongodb_uri is None and data_dir_in_use(settings.data_dir):
        print(
            f"fhirserver: data directory {settings.data_dir} is in use by another "
            "fhirserver process; stop it or pass another --data-dir",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.log_level)
    server = GracefulServer(server_config(settings))
    server.run()
    return 0 if server.started else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations and exit."""
    from fhirserver.storage.embedded import mongodb_uri_for
    from fhirserver.storage.migrations import apply_migrations
    from fhirserver.storage.mongo import Mongo

    settings = _settings(args)

    async def run(uri: str) -> list[str]:
        mongo = Mongo(uri, settings.db_name)
        try:
            return await apply_migrations(mongo.db)
        finally:
            await mongo.close()

    with mongodb_uri_for(settings.mongodb_uri, settings.data_dir) as uri:
        applied = asyncio.run(run(uri))
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Write a synthetic health system into the database `serve` would use."""
    from fhirserver.context import full_indexer
    from fhirserver.generate import GenerateConfig, generate
    from fhirserver.phi.codec import PhiCodec
    from fhirserver.storage.embedded import mongodb_uri_for
    from fhirserver.storage.migrations import apply_migrations
    from fhirserver.storage.mongo import Mongo

    settings = _settings(args)
    cfg = GenerateConfig(
        providers=args.providers,
        days=args.days,
        seed=args.seed,
        granule_minutes=settings.claim_granule_minutes,
    )

    def progress(text: str) -> None:
        print(f"generate: {text}", file=sys.stderr, flush=True)

    async def run(uri: str) -> str:
        mongo = Mongo(uri, settings.db_name)
        try:
            await apply_migrations(mongo.db)
            stats = await generate(mongo.db, cfg, full_indexer, progress=progress,
                                   phi=PhiCodec.from_settings(settings))
        finally:
            await mongo.close()
        if stats.reused:
            return f"already generated here: {stats.as_dict()}"
        return f"generated {stats.as_dict()}"

    with mongodb_uri_for(
        settings.mongodb_uri, settings.data_dir, settings.embedded_cache_size
    ) as uri:
        print(asyncio.run(run(uri)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all sub-commands."""
    parser = argparse.ArgumentParser(prog="fhirserver", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the FHIR server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", type=Path, dest="data_dir")
    serve.add_argument("--no-demo", action="store_true", help="do not load the demo data")
    serve.add_argument("--ssl-certfile", type=Path, dest="ssl_certfile",
                       help="serve HTTPS (TLS 1.2+) with this PEM certificate chain")
    serve.add_argument("--ssl-keyfile", type=Path, dest="ssl_keyfile",
                       help="the certificate's PEM private key")
    serve.set_defaults(func=cmd_serve)
    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--data-dir", type=Path, dest="data_dir")
    migrate.set_defaults(func=cmd_migrate)
    gen = sub.add_parser("generate", help="write a synthetic health system (load tests)")
    gen.add_argument("--providers", type=int, default=5000)
    gen.add_argument("--days", type=int, default=90)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--data-dir", type=Path, dest="data_dir")
    gen.set_defaults(func=cmd_generate)
    from fhirserver.auth.admin_cli import add_auth_commands
    from fhirserver.phi.cli import add_phi_commands

    add_phi_commands(add_auth_commands(sub, _settings), _settings)
    from fhirserver.audit.cli import add_audit_commands

    add_audit_commands(sub, _settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fhirserver` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
