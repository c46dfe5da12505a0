"""The access tests use the auth tests' server (authorization on, own database, clock)."""

from tests.auth.conftest import auth_server, http  # noqa: F401
