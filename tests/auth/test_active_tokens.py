"""The active-token memory: revocations evict at once, a zero ttl remembers nothing."""

from __future__ import annotations

from fhirserver.auth.active_tokens import TokenMemo
from fhirserver.auth.models import TokenRecord


def _record(jti: str, grant: str) -> TokenRecord:
    return TokenRecord(jti=jti, grant_id=grant, client_id="c", scope="system/*.rs",
                       grant_type="client_credentials", issued_at=0, expires_at=10**10)


def test_revocation_evicts_token_and_grant() -> None:
    cache: TokenMemo[TokenRecord] = TokenMemo(ttl=60)
    for jti, grant in (("a", "g1"), ("b", "g1"), ("c", "g2")):
        cache.put(jti, _record(jti, grant), jti, grant)
    assert cache.get("a") is not None
    cache.forget(jti="a")
    assert cache.get("a") is None and cache.get("b") is not None
    cache.forget(grant_id="g1")
    assert cache.get("b") is None and cache.get("c") is not None


def test_zero_ttl_remembers_nothing() -> None:
    cache: TokenMemo[TokenRecord] = TokenMemo(ttl=0)
    cache.put("a", _record("a", "g"), "a", "g")
    assert cache.get("a") is None
