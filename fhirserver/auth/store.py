"""The auth collections, through a *synchronous* PyMongo client.

authlib's AuthorizationServer is synchronous: its grants call `query_client`,
`query_authorization_code`, `save_token`... and wait for the answer. Those callbacks
cannot await the server's AsyncMongoClient (they run inside authlib's call stack), so
the auth server keeps its own small sync MongoClient on the same database and every
authlib call runs in a worker thread (`run_in_threadpool` in the API layer): the event
loop never blocks on the auth collections, and no async/sync bridging is needed.

Bearer values (authorization codes, refresh tokens, session ids) are stored as SHA-256
hashes; a database dump does not hand out live credentials. A user's display name (for a
patient user, the patient's name) and the token-signing private keys are sealed with the
PHI record cipher (docs/phi.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from fhirserver.auth.models import AuthCode, Client, LaunchContext, TokenRecord, User
from fhirserver.auth.passwords import sha256_hex
from fhirserver.phi.cipher import RecordCipher, signing_key_context, user_name_context

Doc = dict[str, Any]

# Expired documents are purged by TTL indexes on `purge_at` (migrations/0004_auth.json);
# expiry itself is always checked on read against the server clock.
_PURGE_GRACE = timedelta(days=1)


def purge_at(expires_at: int) -> datetime:
    """When a document that expires at `expires_at` (epoch seconds) may be deleted."""
    return datetime.fromtimestamp(expires_at, UTC) + _PURGE_GRACE


class AuthStore:
    """Reads and writes of the auth collections (clients, users, codes, tokens, ...)."""

    def __init__(
        self, client: MongoClient[Doc], db_name: str, cipher: RecordCipher | None = None
    ) -> None:
        self.client = client
        self.cipher = cipher
        # Called as hook(jti=..., grant_id=...) after a revocation (active_tokens.py).
        self.revocation_hooks: list[Callable[..., None]] = []
        self.db: Database[Doc] = client[db_name]
        self.clients: Collection[Doc] = self.db["auth_clients"]
        self.users: Collection[Doc] = self.db["auth_users"]
        self.codes: Collection[Doc] = self.db["auth_codes"]
        self.tokens: Collection[Doc] = self.db["auth_tokens"]
        self.launches: Collection[Doc] = self.db["auth_launches"]
        self.requests: Collection[Doc] = self.db["auth_requests"]
        self.sessions: Collection[Doc] = self.db["auth_sessions"]
        self.keys: Collection[Doc] = self.db["auth_keys"]
        self.meta: Collection[Doc] = self.db["_meta"]

    # ---- clients ------------------------------------------------------------

    def get_client(self, client_id: str) -> Client | None:
        if not isinstance(client_id, str):
            return None
        doc = self.clients.find_one({"_id": client_id})
        return Client.from_doc(doc) if doc else None

    def insert_client(self, client: Client) -> bool:
        """False when the id is taken."""
        try:
            self.clients.insert_one(client.to_doc())
        except DuplicateKeyError:
            return False
        return True

    def upsert_client(self, client: Client) -> None:
        doc = client.to_doc()
        self.clients.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def list_clients(self) -> list[Client]:
        return [Client.from_doc(d) for d in self.clients.find({}).sort("_id", 1)]

    def delete_client(self, client_id: str) -> bool:
        return self.clients.delete_one({"_id": client_id}).deleted_count == 1

    # ---- users --------------------------------------------------------------

    def get_user(self, username: str) -> User | None:
        if not isinstance(username, str):
            return None
        doc = self.users.find_one({"_id": username})
        if doc is None:
            return None
        name = doc.get("name")
        if isinstance(name, bytes):
            if self.cipher is None:
                raise RuntimeError("a sealed user record needs the PHI keyring")
            doc["name"] = self.cipher.open(user_name_context(username), name).decode()
        return User.from_doc(doc)

    def upsert_user(self, user: User) -> None:
        doc = user.to_doc()
        if self.cipher is not None and doc.get("name"):
            doc["name"], doc["k"] = self.cipher.seal(
                user_name_context(user.username), str(doc["name"]).encode()
            )
        self.users.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    # ---- browser sessions and pending authorization requests -----------------

    def create_session(self, token: str, username: str, now: int, expires_at: int) -> str:
        sid = sha256_hex(token)
        self.sessions.insert_one(
            {
                "_id": sid,
                "user_id": username,
                "auth_time": now,
                "exp": expires_at,
                "purge_at": purge_at(expires_at),
            }
        )
        return sid

    def get_session(self, token: str | None, now: int) -> Doc | None:
        """The live session behind a cookie value, or None."""
        if not token:
            return None
        doc = self.sessions.find_one({"_id": sha256_hex(token)})
        if doc is None or doc["exp"] <= now:
            return None
        return doc

    def session_alive(self, sid: str | None, now: int) -> bool:
        if not sid:
            return False
        doc = self.sessions.find_one({"_id": sid}, {"exp": 1})
        return doc is not None and doc["exp"] > now

    def end_session(self, token: str) -> None:
        self.sessions.delete_one({"_id": sha256_hex(token)})

    def save_request(self, doc: Doc) -> None:
        doc["purge_at"] = purge_at(doc["exp"])
        self.requests.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def get_request(self, req_id: str, now: int) -> Doc | None:
        if not isinstance(req_id, str) or not req_id:
            return None
        doc = self.requests.find_one({"_id": req_id})
        if doc is None or doc["exp"] <= now:
            return None
        return doc

    def update_request(self, req_id: str, changes: Doc) -> None:
        self.requests.update_one({"_id": req_id}, {"$set": changes})

    def take_request(self, req_id: str) -> Doc | None:
        """Remove a pending request and return it (consent is answered once)."""
        return self.requests.find_one_and_delete({"_id": req_id})

    # ---- launch contexts ----------------------------------------------------

    def save_launch(self, launch: LaunchContext) -> None:
        self.launches.insert_one(
            {
                "_id": launch.launch_id,
                "patient": launch.patient,
                "encounter": launch.encounter,
                "created_by": launch.created_by,
                "client_id": launch.client_id,
                "exp": launch.expires_at,
                "purge_at": purge_at(launch.expires_at),
            }
        )

    def get_launch(self, launch_id: str, now: int) -> LaunchContext | None:
        if not isinstance(launch_id, str) or not launch_id:
            return None
        doc = self.launches.find_one({"_id": launch_id})
        if doc is None or doc["exp"] <= now:
            return None
        return LaunchContext(
            launch_id=doc["_id"],
            patient=doc.get("patient"),
            encounter=doc.get("encounter"),
            created_by=doc["created_by"],
            expires_at=doc["exp"],
            client_id=doc.get("client_id"),
        )

    # ---- authorization codes ------------------------------------------------

    def save_code(self, code: str, item: AuthCode) -> None:
        self.codes.insert_one(
            {
                "_id": sha256_hex(code),
                "client_id": item.client_id,
                "redirect_uri": item.redirect_uri,
                "scope": item.scope,
                "user_id": item.user_id,
                "context": item.context,
                "code_challenge": item.code_challenge,
                "code_challenge_method": item.code_challenge_method,
                "grant_id": item.grant_id,
                "exp": item.expires_at,
                "auth_time": item.auth_time,
                "nonce": item.nonce,
                "session_id": item.session_id,
                "used": False,
                "purge_at": purge_at(item.expires_at),
            }
        )

    def redeem_code(self, code: str, client_id: str) -> tuple[Doc | None, bool]:
        """Atomically mark a code used. Returns (the code as it was, reused?).

        One redemption wins even under concurrent token requests: the update matches
        only while `used` is false.
        """
        h = sha256_hex(code)
        doc = self.codes.find_one_and_update(
            {"_id": h, "client_id": client_id, "used": False},
            {"$set": {"used": True}},
            return_document=ReturnDocument.BEFORE,
        )
        if doc is not None:
            return doc, False
        prior = self.codes.find_one({"_id": h, "client_id": client_id}, {"grant_id": 1})
        return prior, prior is not None

    # ---- tokens ---------------------------------------------------------------

    def save_token(self, record: TokenRecord, refresh_token: str | None) -> None:
        expires = max(record.expires_at, record.refresh_expires_at or 0)
        doc: Doc = {
            "_id": record.jti,
            "grant_id": record.grant_id,
            "client_id": record.client_id,
            "scope": record.scope,
            "grant_type": record.grant_type,
            "iat": record.issued_at,
            "exp": record.expires_at,
            "user_id": record.user_id,
            "context": record.context,
            "revoked": False,
            "session_id": record.session_id,
            "auth_time": record.auth_time,
            "fhir_user": record.fhir_user,
            "purge_at": purge_at(expires),
        }
        if refresh_token is not None:
            # Only tokens with a refresh token carry the (unique, sparse) hash field.
            doc["refresh_hash"] = sha256_hex(refresh_token)
            doc["refresh_exp"] = record.refresh_expires_at
            doc["refresh_revoked"] = False
        self.tokens.insert_one(doc)

    def get_token(self, jti: str) -> TokenRecord | None:
        doc = self.tokens.find_one({"_id": jti})
        return TokenRecord.from_doc(doc) if doc else None

    def find_refresh(self, refresh_token: str) -> TokenRecord | None:
        doc = self.tokens.find_one({"refresh_hash": sha256_hex(refresh_token)})
        return TokenRecord.from_doc(doc) if doc else None

    def rotate_refresh(self, jti: str) -> bool:
        """Atomically retire a refresh token as it is used; False if someone else did first."""
        res = self.tokens.update_one(
            {"_id": jti, "refresh_revoked": False},
            {"$set": {"refresh_revoked": True, "rotated": True}},
        )
        return res.modified_count == 1

    def revoke_access(self, jti: str) -> None:
        self.tokens.update_one({"_id": jti}, {"$set": {"revoked": True}})
        for hook in self.revocation_hooks:
            hook(jti=jti)

    def revoke_grant(self, grant_id: str) -> int:
        """Revoke every access and refresh token issued under one authorization."""
        res = self.tokens.update_many(
            {"grant_id": grant_id}, {"$set": {"revoked": True, "refresh_revoked": True}}
        )
        for hook in self.revocation_hooks:
            hook(grant_id=grant_id)
        return res.modified_count

    # ---- demo credentials ------------------------------------------------------

    def get_meta(self, key: str) -> Doc | None:
        return self.meta.find_one({"_id": key})

    def set_meta_once(self, key: str, values: Doc) -> Doc:
        """Insert `values` under `key` unless present; return what is stored."""
        try:
            self.meta.insert_one({"_id": key, **values})
        except DuplicateKeyError:
            pass
        doc = self.meta.find_one({"_id": key})
        assert doc is not None
        return doc

    # ---- signing keys ---------------------------------------------------------

    def signing_keys(self) -> list[Doc]:
        """The current and previous signing keys, `jwk` the private JWK (opened)."""
        docs = list(self.keys.find({"status": {"$in": ["current", "previous"]}}))
        for doc in docs:
            sealed = doc.pop("private", None)
            if isinstance(sealed, bytes):
                if self.cipher is None:
                    raise RuntimeError("a sealed signing key needs the PHI keyring")
                doc["jwk"] = orjson.loads(self.cipher.open(signing_key_context(doc["_id"]), sealed))
        return docs

    def insert_signing_key(self, doc: Doc) -> None:
        """Store a new signing key; its private JWK (`jwk`) is sealed into `private` when a
        cipher is set (a database dump must not let anyone mint tokens)."""
        doc = dict(doc)
        if self.cipher is not None:
            doc["private"], doc["k"] = self.cipher.seal(
                signing_key_context(doc["_id"]), orjson.dumps(doc.pop("jwk"))
            )
        self.keys.insert_one(doc)

    def demote_signing_keys(self, keep_kid: str) -> None:
        """The new key becomes the only current one; the last current becomes previous."""
        self.keys.update_many(
            {"status": "previous", "_id": {"$ne": keep_kid}}, {"$set": {"status": "retired"}}
        )
        self.keys.update_many(
            {"status": "current", "_id": {"$ne": keep_kid}}, {"$set": {"status": "previous"}}
        )
