"""Blind index: keyed HMAC tokens in place of plaintext search values of PHI parameters.

`BlindIndex.blind(type, idx, srt)` rewrites what `fhir/indexing.extract_index` produced for
the parameters in `BLINDED`: each becomes a flat list of tokens (22-char base64url of the
first 16 bytes of HMAC-SHA256 under the blind-index key, which is not a data key), and its
sort key becomes "". The search side (`fhir/search.py`) computes the same tokens from the
query. Every token is domain-separated by type, parameter and kind:

- string: ``p`` = each prefix of the normalised value of 1..16 characters, each longer
  prefix that ends at a word boundary, and the whole value (FHIR "starts with");
  ``x`` = the exact value (`:exact`).
- token: ``c`` = code, ``sc`` = ``system|code`` (``|code`` when no system), ``s`` = system.
- date: ``d`` = ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` as far as the value's precision goes.

docs/phi.md lists what this keeps and what it gives up (ranges, :contains, sorting).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from fhirserver.fhir.searchparams import get_param
from fhirserver.phi.keyring import KeyringSource

PREFIX_CHARS = 16
_DIGEST_BYTES = 16

# type -> param -> the field (param) whose tokens it searches (an alias for `phonetic`).
BLINDED: dict[str, dict[str, str]] = {
    "Patient": {
        "identifier": "identifier",
        "name": "name",
        "family": "family",
        "given": "given",
        "phonetic": "name",
        "telecom": "telecom",
        "phone": "phone",
        "email": "email",
        "address": "address",
        "address-city": "address-city",
        "address-state": "address-state",
        "address-postalcode": "address-postalcode",
        "address-country": "address-country",
        "birthdate": "birthdate",
    },
    "Appointment": {"reason-code": "reason-code"},
}

for _rt, _params in BLINDED.items():  # fail at import, not at the first search
    for _name in _params:
        _sp = get_param(_rt, _name)
        assert _sp is not None and _sp.type in ("string", "token", "date"), (_rt, _name)


def string_prefixes(normalised: str) -> list[str]:
    """The prefixes a string value is findable by: 1..16 chars, word ends, the whole."""
    out = [normalised[:i] for i in range(1, min(len(normalised), PREFIX_CHARS) + 1)]
    for i, ch in enumerate(normalised):
        if ch == " " and i > PREFIX_CHARS:
            out.append(normalised[:i])
    if len(normalised) > PREFIX_CHARS:
        out.append(normalised)
    return out


def date_grains(dl: str, dh: str) -> list[str]:
    """`YYYY`, `YYYY-MM`, `YYYY-MM-DD` of a date value, as far as its precision goes
    (from its calendar-day range [dl, dh])."""
    if dl == dh:
        return [dl[:4], dl[:7], dl]
    if dl[:7] == dh[:7]:
        return [dl[:4], dl[:7]]
    if dl[:4] == dh[:4]:
        return [dl[:4]]
    return []


class BlindIndex:
    """Computes blind-index tokens with the keyring's index key."""

    def __init__(self, source: KeyringSource) -> None:
        self._mac = hmac.new(source.keyring.index_key, digestmod=hashlib.sha256)

    @staticmethod
    def covers(resource_type: str, param: str) -> bool:
        """True when `param` of `resource_type` is searched by tokens."""
        return param in BLINDED.get(resource_type, {})

    @staticmethod
    def field(resource_type: str, param: str) -> str:
        """The idx field holding the tokens of `param` (`phonetic` shares `name`'s)."""
        return BLINDED[resource_type][param]

    def token(self, resource_type: str, param: str, kind: str, value: str) -> str:
        """One token: HMAC(index key, type | param | kind | value), truncated, base64url."""
        mac = self._mac.copy()
        mac.update(f"{resource_type}\x1f{param}\x1f{kind}\x1f{value}".encode())
        return base64.urlsafe_b64encode(mac.digest()[:_DIGEST_BYTES]).rstrip(b"=").decode()

    def digest(self, text: str) -> str:
        """A keyed digest of `text` (conditional-create keys of PHI-bearing types)."""
        mac = self._mac.copy()
        mac.update(b"digest\x1f" + text.encode())
        return mac.hexdigest()

    def _tokens(self, rt: str, param: str, ptype: str, values: Iterable[Any]) -> list[str]:
        out: list[str] = []
        for v in values:
            if not isinstance(v, dict):
                continue
            if ptype == "string":
                out += [self.token(rt, param, "p", p) for p in string_prefixes(v["n"])]
                out.append(self.token(rt, param, "x", v["e"]))
            elif ptype == "token":
                system, code = v.get("s"), v.get("c")
                if code is not None:
                    out.append(self.token(rt, param, "c", str(code)))
                    out.append(self.token(rt, param, "sc", f"{system or ''}|{code}"))
                if system:
                    out.append(self.token(rt, param, "s", str(system)))
            elif ptype == "date":
                out += [self.token(rt, param, "d", g) for g in date_grains(v["dl"], v["dh"])]
        return list(dict.fromkeys(out))

    def blind(
        self, resource_type: str, idx: dict[str, list[Any]], srt: dict[str, str]
    ) -> tuple[dict[str, list[Any]], dict[str, str]]:
        """Replace the plaintext values and sort keys of the blinded params (in place)."""
        params = BLINDED.get(resource_type)
        if not params:
            return idx, srt
        for name, fld in params.items():
            values = idx.pop(name, None)
            if name in srt:
                srt[name] = ""
            if fld != name or not values:
                continue  # an alias searches its target's tokens
            sp = get_param(resource_type, name)
            assert sp is not None
            tokens = self._tokens(resource_type, name, sp.type, values)
            if tokens:
                idx[name] = tokens
        return idx, srt
