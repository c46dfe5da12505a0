"""US National Provider Identifier (NPI) check digits.

An NPI is 10 digits: 9 identifying digits plus a Luhn check digit computed
over the 9 digits prefixed with the card-issuer prefix ``80840`` (CMS,
"NPI check digit", ISO/IEC 7812).
"""

from __future__ import annotations

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
_NPI_PREFIX = "80840"


def _luhn_sum(digits: str) -> int:
    """Luhn sum of ``digits``, doubling every second digit from the right (check digit last)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


def npi_check_digit(base: str) -> str:
    """The Luhn check digit for the 9-digit NPI ``base``."""
    if len(base) != 9 or not base.isdigit():
        raise ValueError(f"NPI base must be 9 digits, got {base!r}")
    total = _luhn_sum(_NPI_PREFIX + base + "0")
    return str((10 - total % 10) % 10)


def make_npi(base: str) -> str:
    """A full 10-digit NPI: ``base`` (9 digits) followed by its check digit."""
    return base + npi_check_digit(base)


def is_valid_npi(npi: str) -> bool:
    """True when ``npi`` is 10 digits, starts with 1 or 2, and its check digit is right."""
    if len(npi) != 10 or not npi.isdigit() or npi[0] not in "12":
        return False
    return _luhn_sum(_NPI_PREFIX + npi) % 10 == 0
