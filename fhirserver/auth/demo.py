"""Demo credentials: a confidential client and one user per role, created once with the demo data.

The secrets are random per database (never a well-known default, since FHIRSERVER_DEMO is
on by default) and kept in `_meta` so every start prints the same ones.
"""

from __future__ import annotations

from typing import Any

from fhirserver.auth.passwords import new_secret
from fhirserver.auth.service import AuthService

DEMO_CLIENT_ID = "demo-confidential"
DEMO_SCOPE = (
    "openid fhirUser profile launch launch/patient offline_access online_access "
    "patient/*.cruds user/*.cruds system/*.cruds fhirserver:launch"
)
# username, role, fhirUser, name, organization
DEMO_USERS: tuple[tuple[str, str, str | None, str, str | None], ...] = (
    ("demo-practitioner", "practitioner", "Practitioner/pr-ana-garcia", "Dr. Ana Garcia", None),
    ("demo-patient", "patient", "Patient/pat-maria-lopez", "Maria Lopez", None),
    ("demo-staff", "staff", None, "Front desk, Riverside General",
     "Organization/org-riverside-general"),
    ("demo-auditor", "auditor", None, "Privacy officer", None),
)


def ensure_demo_credentials(auth: AuthService) -> dict[str, Any]:
    """Create the demo client and users unless present; return their credentials."""
    stored = auth.store.set_meta_once(
        "demo-auth",
        {
            "client_secret": new_secret(24),
            "passwords": {username: new_secret(9) for username, *_ in DEMO_USERS},
        },
    )
    if auth.store.get_client(DEMO_CLIENT_ID) is None:
        redirects = ["http://localhost:8765/callback", "http://127.0.0.1:8765/callback"]
        auth.add_client(
            {
                "client_id": DEMO_CLIENT_ID,
                "name": "Demo confidential client",
                "type": "confidential-symmetric",
                "client_secret": stored["client_secret"],
                "redirect_uris": redirects,
                "scope": DEMO_SCOPE,
                "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            }
        )
    users = []
    for username, role, fhir_user, name, organization in DEMO_USERS:
        password = stored["passwords"].get(username) or auth.store.set_meta_once(
            f"demo-password:{username}", {"password": new_secret(9)}
        )["password"]
        if auth.store.get_user(username) is None:
            auth.add_user(username, role, password, fhir_user, name, organization)
        users.append(
            {"username": username, "password": password, "role": role, "fhir_user": fhir_user}
        )
    return {
        "client_id": DEMO_CLIENT_ID,
        "client_secret": stored["client_secret"],
        "users": users,
        "token_endpoint": auth.urls.token,
        "authorize_endpoint": auth.urls.authorize,
        "fhir_base": auth.urls.fhir_base,
    }


def demo_banner(creds: dict[str, Any]) -> str:
    """What `fhirserver serve` prints so a newcomer can get a token at once."""
    cid, secret = creds["client_id"], creds["client_secret"]
    lines = [
        "",
        "Demo SMART credentials (random per data directory, same on every start):",
        f"  confidential client  {cid} / {secret}",
    ]
    for user in creds["users"]:
        lines.append(
            f"  {user['role']:<20} {user['username']} / {user['password']}"
            + (f"  ({user['fhir_user']})" if user["fhir_user"] else "")
        )
    lines += [
        "  get a system token:",
        f"    curl -s -u {cid}:{secret} -d grant_type=client_credentials "
        f"-d 'scope=system/*.rs' {creds['token_endpoint']}",
        "  or a user token: open the authorize URL from docs/auth.md in a browser",
        "",
    ]
    return "\n".join(lines)
