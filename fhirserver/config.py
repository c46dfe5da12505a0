"""Settings: one typed object built once at start-up from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server settings. `MONGODB_URI`/`REDIS_URL` unset selects the embedded servers."""

    model_config = SettingsConfigDict(env_prefix="FHIRSERVER_", extra="ignore")

    mongodb_uri: str | None = Field(default=None, validation_alias="MONGODB_URI")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    db_name: str = "fhirserver"
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    base_path: str = "/fhir"
    public_base_url: str | None = None
    demo: bool = True
    max_body_bytes: int = 2 * 1024 * 1024
    default_page_size: int = 20
    max_page_size: int = 1000
    max_include: int = 1000
    max_chain_ids: int = 5000
    log_level: str = "INFO"
    # Claims granule: every booked minute is claimed in granules of this size (docs/scheduling.md).
    claim_granule_minutes: int = 5
    embedded_cache_size: str = "1G"
    # Answers of store queries kept per process, invalidated by per-type generations in
    # Redis (storage/query_cache.py); 0 turns the cache off. The time-to-live bounds how
    # long a change made outside the API (keys rotate, a manual edit) can go unseen.
    query_cache_mb: int = 64
    query_cache_ttl_seconds: float = 30.0
    # Plain creates that arrive together commit in one transaction (fhir/combiner.py).
    combine_creates: bool = True
    # The embedded SecantusDB runs as a child process (its own GIL and core); true keeps it
    # in the server's process (bench/results/core.txt compares the two).
    embedded_store_in_process: bool = False
    # Mounts GET /fhir/_noop: the same stack answering with constant bytes (bench ceiling).
    bench_endpoints: bool = False
    # HTTP keep-alive: longer than a load balancer's idle timeout (60 s is common), so the
    # server never closes a connection the client is about to reuse.
    keep_alive_seconds: int = 75
    # $find's in-memory availability index (docs/availability-index.md); off: the engine
    # expands rules per request (the benchmark's naive baseline).
    availability_index: bool = True
    # SMART authorization server (docs/auth.md). Clients upserted from this JSON file on start.
    clients_file: Path | None = None
    # Every FHIR request needs a bearer token (docs/auth.md). Off only for development and
    # the core test suite: every request then acts as a trusted system client.
    auth_required: bool = True
    auth_access_token_seconds: int = 3600
    auth_refresh_token_days: int = 90
    auth_session_minutes: int = 480
    auth_launch_minutes: int = 60
    # Active access-token records are remembered this long per process; a revocation made
    # by another server process takes effect here within it (auth/active_tokens.py).
    auth_token_cache_seconds: float = 5.0
    # PHI at rest (docs/phi.md). The keyring file; default <data_dir>/phi-keyring.json,
    # created 0600 on first start. Back it up apart from the database.
    phi_keyring: Path | None = None
    # Production alternative to the file: keys from the environment (base64, 32 bytes):
    # FHIRSERVER_PHI_DATA_KEYS="kid1:b64,kid2:b64", FHIRSERVER_PHI_ACTIVE_KID (default: last),
    # FHIRSERVER_PHI_INDEX_KEY="b64".
    phi_data_keys: str | None = None
    phi_active_kid: str | None = None
    phi_index_key: str | None = None
    # How often a running server looks at the keyring file for a new active key (seconds).
    phi_keyring_check_seconds: float = 1.0
    # On start, seal in the background any PHI record not under the active key (plaintext
    # written before encryption, or sealed by a server that had not seen a rotation yet).
    phi_seal_on_start: bool = True
    # HTTPS (TLS 1.2 or newer): PEM certificate chain and private key (docs/phi.md).
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def base_url(self) -> str:
        """The absolute FHIR base URL used in fullUrl, Location headers and links."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{self.host}:{self.port}{self.base_path}"
