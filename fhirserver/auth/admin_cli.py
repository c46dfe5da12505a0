"""`fhirserver client ...`, `fhirserver user ...`, `fhirserver keys ...`.

They work on the database directly (MONGODB_URI, or the embedded store in the data dir,
which must not be in use by a running server: use the admin API then, docs/auth.md).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from pymongo import MongoClient

from fhirserver.auth.clients import ClientSpecError
from fhirserver.auth.models import ROLES
from fhirserver.auth.service import AuthService
from fhirserver.config import Settings
from fhirserver.scheduling.clock import SystemClock

SettingsFactory = Callable[[argparse.Namespace], Settings]


@contextmanager
def _service(settings: Settings) -> Iterator[AuthService]:
    """An AuthService on the configured database, migrated; no Redis is contacted."""
    from fhirserver.storage.embedded import mongodb_uri_for
    from fhirserver.storage.migrations import apply_migrations
    from fhirserver.storage.mongo import Mongo

    with mongodb_uri_for(settings.mongodb_uri, settings.data_dir) as uri:

        async def migrate() -> None:
            mongo = Mongo(uri, settings.db_name)
            try:
                await apply_migrations(mongo.db)
            finally:
                await mongo.close()

        asyncio.run(migrate())
        client: MongoClient[dict[str, Any]] = MongoClient(uri, tz_aware=True)
        # Redis (assertion jtis, login throttling) is not used by these commands.
        lazy_redis = redis.Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
        service = AuthService(settings, client, lazy_redis, SystemClock())
        try:
            yield service
        finally:
            service.close()


def _run(
    settings_of: SettingsFactory, args: argparse.Namespace, fn: Callable[[AuthService], int]
) -> int:
    from fhirserver.storage.embedded import DataDirInUse

    try:
        with _service(settings_of(args)) as service:
            return fn(service)
    except DataDirInUse as exc:
        print(f"fhirserver: {exc} (a running server takes POST /auth/clients)", file=sys.stderr)
        return 2
    except (ClientSpecError, ValueError, OSError) as exc:
        print(f"fhirserver: {exc}", file=sys.stderr)
        return 1


def cmd_client_add(settings_of: SettingsFactory, args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {
        "client_id": args.id,
        "type": args.type,
        "scope": args.scope,
        "redirect_uris": args.redirect_uri or [],
        "name": args.name or args.id,
        "introspect_any": args.introspect_any,
    }
    if args.grant_type:
        spec["grant_types"] = args.grant_type
    if args.secret:
        spec["client_secret"] = args.secret
    if args.jwks_file:
        spec["jwks"] = json.loads(Path(args.jwks_file).read_text())
    if args.jwks_uri:
        spec["jwks_uri"] = args.jwks_uri

    def add(service: AuthService) -> int:
        client, secret = service.add_client(spec, replace=args.replace)
        out = client.public_view()
        if secret:
            out["client_secret"] = secret
        print(json.dumps(out, indent=2))
        return 0

    return _run(settings_of, args, add)


def cmd_client_list(settings_of: SettingsFactory, args: argparse.Namespace) -> int:
    def show(service: AuthService) -> int:
        for client in service.store.list_clients():
            print(json.dumps(client.public_view()))
        return 0

    return _run(settings_of, args, show)


def cmd_user_add(settings_of: SettingsFactory, args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.password:
        password = args.password
    else:
        password = getpass.getpass(f"password for {args.username}: ")
    if len(password) < 8:
        print("fhirserver: the password needs at least 8 characters", file=sys.stderr)
        return 1

    def add(service: AuthService) -> int:
        user = service.add_user(
            args.username, args.role, password, args.fhir_user, args.name, args.organization
        )
        print(f"user {user.username} ({user.role}, {user.fhir_user or 'no fhirUser'}) saved")
        return 0

    return _run(settings_of, args, add)


def cmd_keys_rotate(settings_of: SettingsFactory, args: argparse.Namespace) -> int:
    def rotate(service: AuthService) -> int:
        kid = service.rotate_signing_key()
        print(f"new signing key {kid}; the previous one stays in the JWKS until the next rotation")
        return 0

    return _run(settings_of, args, rotate)


def add_auth_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], settings_of: SettingsFactory
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Register the client/user/keys sub-commands on the main parser; returns `keys`'s
    sub-parsers (the PHI key commands join them)."""

    def bind(fn: Callable[[SettingsFactory, argparse.Namespace], int]) -> Callable[..., int]:
        return lambda args: fn(settings_of, args)

    client = sub.add_parser("client", help="manage OAuth clients").add_subparsers(
        dest="client_command", required=True
    )
    add = client.add_parser("add", help="register or update a client")
    add.add_argument("--id", required=True)
    add.add_argument(
        "--type",
        required=True,
        choices=["public", "confidential-symmetric", "confidential-asymmetric"],
    )
    add.add_argument("--scope", required=True, help="pre-authorized scopes, space-separated")
    add.add_argument("--redirect-uri", action="append", dest="redirect_uri")
    add.add_argument("--name")
    add.add_argument("--secret", help="symmetric clients: the secret (generated if omitted)")
    add.add_argument("--grant-type", action="append", dest="grant_type")
    keys = add.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", dest="jwks_file")
    keys.add_argument("--jwks-uri", dest="jwks_uri")
    add.add_argument("--introspect-any", action="store_true", help="may introspect any token")
    add.add_argument("--no-replace", dest="replace", action="store_false")
    add.add_argument("--data-dir", type=Path, dest="data_dir")
    add.set_defaults(func=bind(cmd_client_add))
    lst = client.add_parser("list", help="list clients")
    lst.add_argument("--data-dir", type=Path, dest="data_dir")
    lst.set_defaults(func=bind(cmd_client_list))

    user = sub.add_parser("user", help="manage login users").add_subparsers(
        dest="user_command", required=True
    )
    uadd = user.add_parser("add", help="create or replace a user")
    uadd.add_argument("--username", required=True)
    uadd.add_argument("--role", required=True, choices=list(ROLES))
    uadd.add_argument("--fhir-user", dest="fhir_user", help="Patient/<id> or Practitioner/<id>")
    uadd.add_argument("--name", default="")
    uadd.add_argument("--organization", help="Organization/<id> a staff user works for")
    uadd.add_argument("--password", help="(prompted when omitted)")
    uadd.add_argument("--password-stdin", action="store_true", dest="password_stdin")
    uadd.add_argument("--data-dir", type=Path, dest="data_dir")
    uadd.set_defaults(func=bind(cmd_user_add))

    keyp = sub.add_parser("keys", help="token signing keys, PHI data keys").add_subparsers(
        dest="keys_command", required=True
    )
    rot = keyp.add_parser("rotate-signing", help="new signing key; the old one stays published")
    rot.add_argument("--data-dir", type=Path, dest="data_dir")
    rot.set_defaults(func=bind(cmd_keys_rotate))
    return keyp
