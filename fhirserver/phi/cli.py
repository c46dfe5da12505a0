"""`fhirserver keys rotate | retire KID | status`: PHI data keys (docs/phi.md).

They work on the database the server uses (MONGODB_URI, or the embedded store of the data
dir: attached to when a running server holds it), so a rotation needs no downtime.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from fhirserver.config import Settings

SettingsFactory = Callable[[argparse.Namespace], Settings]


def _with_db(settings: Settings, fn: Callable[..., Awaitable[int]]) -> int:
    from fhirserver.phi.codec import PhiCodec
    from fhirserver.storage.embedded import mongodb_uri_for
    from fhirserver.storage.mongo import Mongo

    codec = PhiCodec.from_settings(settings)

    async def run(uri: str) -> int:
        mongo = Mongo(uri, settings.db_name)
        try:
            return await fn(mongo.db, codec)
        finally:
            await mongo.close()

    with mongodb_uri_for(settings.mongodb_uri, settings.data_dir, attach=True) as uri:
        return asyncio.run(run(uri))


def cmd_rotate(settings: Settings, args: argparse.Namespace) -> int:
    """New active data key (file keyring), then re-seal every record under the active key."""
    from fhirserver.context import full_indexer
    from fhirserver.phi.codec import PhiCodec, keyring_path
    from fhirserver.phi.keyring import load_or_create, write_keyring
    from fhirserver.phi.rotation import reseal_all

    if settings.phi_data_keys:
        print("fhirserver: keys come from the environment: re-sealing under the configured "
              f"active key {settings.phi_active_kid or '(last)'}", file=sys.stderr)
    elif not args.reseal_only:
        path = keyring_path(settings)
        keyring = load_or_create(path).with_new_active()
        write_keyring(path, keyring)
        print(f"new active data key {keyring.active} in {path}", file=sys.stderr)
        # Running servers look at the keyring file every phi_keyring_check_seconds: after
        # this grace they all seal new writes under the new key (stragglers: next pass).
        time.sleep(2 * settings.phi_keyring_check_seconds + 0.2)

    async def run(db: object, codec: PhiCodec) -> int:
        stats = await reseal_all(
            db,  # type: ignore[arg-type]
            codec,
            codec.indexer(full_indexer),
            batch=args.batch,
            progress=lambda text: print(f"rotate: {text}", file=sys.stderr, flush=True),
        )
        print(json.dumps({"active": stats.kid, "resealed": stats.resealed,
                          "reindexed_legacy": stats.reindexed, "passes": stats.passes}))
        return 0

    return _with_db(settings, run)


def cmd_retire(settings: Settings, args: argparse.Namespace) -> int:
    """Remove a data key from the keyring file once no stored record uses it."""
    from fhirserver.phi.codec import PhiCodec, keyring_path
    from fhirserver.phi.keyring import KeyringError, load_or_create, write_keyring
    from fhirserver.phi.rotation import keys_in_use

    if settings.phi_data_keys:
        print("fhirserver: keys come from the environment; drop the key there", file=sys.stderr)
        return 1

    async def run(db: object, codec: PhiCodec) -> int:
        path = keyring_path(settings)
        try:
            keyring = load_or_create(path).without(args.kid)  # never the active key
        except KeyringError as exc:
            print(f"fhirserver: {exc}", file=sys.stderr)
            return 1
        used = await keys_in_use(db)  # type: ignore[arg-type]
        if used.get(args.kid):
            print(f"fhirserver: {used[args.kid]} records are still sealed under {args.kid}; "
                  "run `fhirserver keys rotate --reseal-only` first", file=sys.stderr)
            return 1
        write_keyring(path, keyring)
        print(f"retired data key {args.kid}; keys left: {', '.join(keyring.data_keys)}")
        return 0

    return _with_db(settings, run)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """The active kid, the keyring's kids and how many records each seals."""
    from fhirserver.phi.codec import PhiCodec
    from fhirserver.phi.rotation import keys_in_use

    async def run(db: object, codec: PhiCodec) -> int:
        used = await keys_in_use(db)  # type: ignore[arg-type]
        keyring = codec.source.keyring
        print(json.dumps({"active": keyring.active, "keys": sorted(keyring.data_keys),
                          "records_by_key": used}))
        return 0

    return _with_db(settings, run)


def add_phi_commands(
    keys: argparse._SubParsersAction[argparse.ArgumentParser], settings_of: SettingsFactory
) -> None:
    """Register `keys rotate`, `keys retire KID` and `keys status`."""

    def bind(fn: Callable[[Settings, argparse.Namespace], int]) -> Callable[..., int]:
        return lambda args: fn(settings_of(args), args)

    rot = keys.add_parser("rotate", help="new PHI data key; re-seal every record under it")
    rot.add_argument("--reseal-only", action="store_true", dest="reseal_only",
                     help="no new key: re-seal what is not under the active key (and plaintext)")
    rot.add_argument("--batch", type=int, default=200)
    rot.add_argument("--data-dir", type=Path, dest="data_dir")
    rot.set_defaults(func=bind(cmd_rotate))
    ret = keys.add_parser("retire", help="drop a PHI data key no record uses any more")
    ret.add_argument("kid")
    ret.add_argument("--data-dir", type=Path, dest="data_dir")
    ret.set_defaults(func=bind(cmd_retire))
    st = keys.add_parser("status", help="PHI keys and how many records each seals")
    st.add_argument("--data-dir", type=Path, dest="data_dir")
    st.set_defaults(func=bind(cmd_status))
