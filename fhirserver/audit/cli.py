"""`fhirserver audit verify`: walk the audit trail's hash chain (docs/audit.md).

Works on the configured database (MONGODB_URI) or on the embedded store in the data dir,
like `fhirserver migrate` (the data dir must then not be in use by a running server).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

from fhirserver.audit.chain import VerifyResult, opener, verify_records
from fhirserver.config import Settings
from fhirserver.phi.cipher import RecordCipher

SettingsFactory = Callable[[argparse.Namespace], Settings]


async def verify_database(uri: str, db_name: str, cipher: RecordCipher) -> VerifyResult:
    """Verify the chain stored in database `db_name` at `uri` (sealed records are opened
    with `cipher`: the server's keyring)."""
    from fhirserver.context import full_indexer
    from fhirserver.storage.audit_log import AuditLog
    from fhirserver.storage.mongo import Mongo

    mongo = Mongo(uri, db_name)
    try:
        log = AuditLog(mongo, full_indexer, cipher)
        return await verify_records(log.records(), opener(cipher), await log.recorded_head())
    finally:
        await mongo.close()


def cmd_audit_verify(settings_of: SettingsFactory, args: argparse.Namespace) -> int:
    """Print "ok N records ..." (exit 0) or the first broken link (exit 1)."""
    from fhirserver.phi.codec import PhiCodec
    from fhirserver.storage.embedded import mongodb_uri_for

    settings = settings_of(args)
    cipher = PhiCodec.from_settings(settings).cipher
    with mongodb_uri_for(settings.mongodb_uri, settings.data_dir) as uri:
        result = asyncio.run(verify_database(uri, settings.db_name, cipher))
    print(result.message())
    return 0 if result.ok else 1


def add_audit_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], settings_of: SettingsFactory
) -> None:
    """Register `fhirserver audit verify` on the main parser."""
    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="check the audit trail's hash chain")
    verify.add_argument("--data-dir", type=Path, dest="data_dir")
    verify.set_defaults(func=lambda args: cmd_audit_verify(settings_of, args))
