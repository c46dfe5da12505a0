"""The authorization server's HTML pages: login, patient picker, consent, errors.

Plain HTML forms (no JavaScript), every value escaped. Served with a strict CSP, no
framing (clickjacking on the consent page) and no caching.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi.responses import HTMLResponse

from fhirserver.auth.patients import PatientChoice

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}form{margin:1rem 0}label{display:block;margin:.5rem 0}
input[type=text],input[type=password],input[type=search]{width:100%;padding:.5rem;
box-sizing:border-box}button{padding:.5rem 1.2rem;margin-right:.5rem}.error{color:#b00020}
.muted{color:#666;font-size:.9rem}
ul{list-style:none;padding:0}li{margin:.4rem 0}code{background:#f3f3f3;padding:0 .2rem}
"""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _hidden(data: dict[str, Any]) -> str:
    return (
        f'<input type=hidden name=req value="{escape(data["req"])}">'
        f'<input type=hidden name=csrf value="{escape(data["csrf"])}">'
    )


def _error(data: dict[str, Any]) -> str:
    return f"<p class=error role=alert>{escape(data['error'])}</p>" if data.get("error") else ""


def login_page(data: dict[str, Any], status: int = 200) -> HTMLResponse:
    body = (
        f"<h1>Sign in</h1><p><b>{escape(data['client_name'])}</b> asks to access your data.</p>"
        f"{_error(data)}"
        f'<form method=post action="login">{_hidden(data)}'
        "<label>Username <input type=text name=username autocomplete=username required "
        f'value="{escape(data.get("username", ""))}"></label>'
        "<label>Password <input type=password name=password autocomplete=current-password "
        "required></label>"
        "<button type=submit>Sign in</button></form>"
    )
    return _page("Sign in", body, status)


def picker_page(data: dict[str, Any], status: int = 200) -> HTMLResponse:
    patients: list[PatientChoice] = data.get("patients", [])
    rows = "".join(
        f'<li><label><input type=radio name=patient value="{escape(p.id)}" required> '
        f"{escape(p.name)} <span class=muted>{escape(p.birth_date)} ({escape(p.id)})</span>"
        "</label></li>"
        for p in patients
    )
    body = (
        f"<h1>Choose a patient</h1><p><b>{escape(data['client_name'])}</b> "
        "will open with the patient you choose.</p>"
        f"{_error(data)}"
        '<form method=get action="picker">'
        f'<input type=hidden name=req value="{escape(data["req"])}">'
        f'<label>Search by name <input type=search name=q value="{escape(data.get("q", ""))}">'
        "</label><button type=submit>Search</button></form>"
        f'<form method=post action="picker">{_hidden(data)}'
        f"<ul>{rows or '<li class=muted>No patient matches.</li>'}</ul>"
        "<button type=submit>Continue</button></form>"
    )
    return _page("Choose a patient", body, status)


def consent_page(data: dict[str, Any], status: int = 200) -> HTMLResponse:
    patient: PatientChoice | None = data.get("patient")
    about = ""
    if patient is not None:
        about = f"<p>Patient: <b>{escape(patient.name)}</b> ({escape(patient.id)})</p>"
    elif data.get("patient_id"):
        about = f"<p>Patient: <b>{escape(str(data['patient_id']))}</b></p>"
    rows = "".join(
        f'<li><label><input type=checkbox name=scope value="{escape(token)}" checked> '
        f"{escape(text)} <code>{escape(token)}</code></label></li>"
        for token, text in data["scopes"]
    )
    narrower = "".join(
        f'<li><label><input type=checkbox name=scope value="{escape(token)}"> '
        f"{escape(text)} <code>{escape(token)}</code></label></li>"
        for token, text in data.get("narrower", [])
    )
    if narrower:
        narrower = ("<p class=muted>Or share less: uncheck a scope above and check a narrower "
                    f"one here.</p><ul>{narrower}</ul>")
    body = (
        f"<h1>Allow access?</h1><p>Signed in as <b>{escape(data['user'])}</b>.</p>"
        f"<p><b>{escape(data['client_name'])}</b> "
        f"(<code>{escape(data['client_id'])}</code>) asks to:</p>{about}"
        f'<form method=post action="consent">{_hidden(data)}<ul>{rows}</ul>'
        "<p class=muted>Uncheck anything you do not want to share.</p>"
        f"{narrower}"
        "<button type=submit name=decision value=allow>Allow</button>"
        "<button type=submit name=decision value=deny>Deny</button></form>"
    )
    return _page("Allow access?", body, status)


def error_page(message: str, status: int = 400) -> HTMLResponse:
    return _page("Authorization error", f"<h1>Cannot continue</h1><p>{escape(message)}</p>", status)


def message_page(title: str, message: str) -> HTMLResponse:
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")


PAGES = {"login": login_page, "picker": picker_page, "consent": consent_page}
