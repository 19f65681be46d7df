"""Server settings: embedded defaults < config file < environment (WASMLET_*) < CLI flags.

The config file is TOML, found at `$WASMLET_CONFIG` or `<data_dir>/wasmlet.toml`.
CLI flags arrive as keyword arguments, which pydantic-settings ranks highest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _config_file(data_dir: object = None) -> Path:
    """`$WASMLET_CONFIG`, else `wasmlet.toml` in the data dir (flag, then env, then default)."""
    explicit = os.environ.get("WASMLET_CONFIG")
    if explicit:
        return Path(explicit)
    return Path(str(data_dir or os.environ.get("WASMLET_DATA_DIR", ".wasmlet"))) / "wasmlet.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WASMLET_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = Field(1, ge=1, le=64)
    data_dir: Path = Path(".wasmlet")
    database_url: str | None = None  # default: SQLite file in the data dir

    # Limits every function gets unless its spec says otherwise.
    default_timeout_ms: int = Field(5000, ge=1)
    default_memory_mb: int = Field(64, ge=1)
    max_timeout_ms: int = Field(300_000, ge=1)
    max_memory_mb: int = Field(4096, ge=1)
    default_pool_size: int = Field(32, ge=1)
    queue_timeout_ms: int = Field(2000, ge=0)

    max_module_bytes: int = Field(50 * 1024 * 1024, ge=1)
    # Functions a module may define, checked before compiling. Compiling costs ~65 us per
    # function however small (measured: 100k tiny functions, 0.7 MB, take 6.4 s on an idle
    # 2-core machine and 20 s under load), so a small module of tiny functions is a cheap
    # way to tie up the server; everything else compile time scales with code bytes
    # (~0.3-0.5 s per MB), which max_module_bytes bounds. Large real programs define tens of
    # thousands of functions at most.
    max_module_functions: int = Field(50_000, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1)
    # Serve invocations straight from the HTTP protocol, without an ASGI cycle
    # (http_protocol.py); off: every request takes the ASGI path.
    fast_lane: bool = True
    # A request body must have arrived completely this long after the request started, or
    # the request ends with 408 and the connection is closed: a client trickling its body
    # (slowloris) cannot hold a connection and a handler forever. Generous enough for a
    # max_module_bytes upload at ~1 MB/s.
    body_timeout_ms: int = Field(60_000, ge=1)
    max_log_bytes: int = Field(16 * 1024, ge=0)
    # Largest response body a guest may produce, in every ABI; checked on the length the
    # guest declares, before a byte is copied out. The same as max_body_bytes: each call
    # in flight holds its output in host memory (twice while it is sent), so the default
    # bounds a response by what the server accepts as a request (64 MiB let 4 calls reach
    # 1 GB RSS).
    # The most a spec may ask for buffers the host holds for a guest: an Extism plugin's
    # var store (per function) and an outbound HTTP response (per request).
    max_var_bytes: int = Field(16 * 1024 * 1024, ge=0)
    max_http_response_bytes: int = Field(64 * 1024 * 1024, ge=1)
    max_output_bytes: int = Field(16 * 1024 * 1024, ge=1)
    invocation_retention: int = Field(1000, ge=0)  # records kept per function

    fuel_metering: bool = True
    epoch_tick_ms: int = Field(10, ge=1)
    # Calls whose recent average stays under this many microseconds run on the event
    # loop thread; longer ones hop to the executor (see runtime/dispatch.py). An inline
    # call may burn at most `inline_fuel` (~10-45 ms) before it is replayed off-loop.
    inline_budget_us: int = Field(1000, ge=0)
    inline_fuel: int = Field(20_000_000, ge=1000)
    executor_threads: int = Field(32, ge=1)
    # Guest calls that compute off the event loop at once (functions without capabilities,
    # whose calls are CPU, not waiting); more queue (up to queue_timeout_ms, then 503).
    # -1 (default) = one fewer than the CPUs, at least 1: the event loop always keeps a core,
    # so short calls keep their latency however many long ones arrive (bench/README.md,
    # fault containment); 0 = no limit (long calls use every core).
    compute_slots: int = Field(-1, ge=-1)
    # Live wasm instances per process (wasmtime's pooling allocator); 0 = allocate on demand.
    max_instances: int = Field(10_000, ge=0)

    # -- host capabilities (src/wasmlet/host) -----------------------------------------------
    # Persistent key-value store: Redis when set (redis://...), else the SQL database.
    redis_url: str | None = None
    # Prefix of every Redis key the store writes (one Redis may serve several installations).
    redis_kv_prefix: str = "wasmlet:kv:"
    kv_max_key_bytes: int = Field(512, ge=1, le=1024)
    kv_max_value_bytes: int = Field(1024 * 1024, ge=1)
    # In-memory key-value store, per process: bounded by entries and total bytes (LRU).
    kv_memory_max_entries: int = Field(100_000, ge=1)
    kv_memory_max_bytes: int = Field(64 * 1024 * 1024, ge=1)
    # Key that encrypts function secrets at rest (a Fernet key, urlsafe base64 of 32 bytes).
    # Unset: generated once into <data_dir>/secret.key (mode 0600).
    secret_key: SecretStr | None = None
    # Function-to-function calls: how deep a chain may go, how many calls one invocation
    # may make.
    max_call_depth: int = Field(8, ge=1, le=64)
    max_calls_per_invocation: int = Field(64, ge=1)
    # Outbound HTTP calls one invocation may make.
    max_http_calls_per_invocation: int = Field(64, ge=1)

    # -- access control (src/wasmlet/auth) ----------------------------------------------------
    # Quotas of every namespace but `default` (0 = unlimited), unless overridden per
    # namespace (`wasmlet namespace quota`). Rate and concurrency are per worker process.
    quota_requests_per_second: float = Field(0, ge=0)
    quota_burst: int = Field(0, ge=0)
    quota_max_concurrency: int = Field(0, ge=0)
    quota_max_functions: int = Field(0, ge=0)
    quota_max_module_bytes: int = Field(0, ge=0)
    # Ceilings on what a tenant's function spec may ask for, and a tenant's key-value use
    # (keys and bytes over every scope it owns). The operator's namespace has none.
    quota_max_memory_mb: int = Field(256, ge=0)
    quota_max_timeout_ms: int = Field(60_000, ge=0)
    quota_max_fuel: int = Field(0, ge=0)
    quota_max_pool_size: int = Field(64, ge=0)
    quota_kv_max_keys: int = Field(100_000, ge=0)
    quota_kv_max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    # Host names the API itself answers on: on these, no route may capture the platform's
    # own paths (/api/, /fn/, /function/, /healthz, /metrics, /docs, ...).
    api_hosts: Annotated[list[str], NoDecode] = ["localhost", "127.0.0.1", "::1", "0.0.0.0"]
    # Outbound HTTP from guests never reaches loopback, link-local (cloud metadata),
    # private or this node's own addresses, unless listed here: comma-separated CIDRs and
    # host names, e.g. `127.0.0.0/8,::1`. A namespace's quota may override it.
    egress_allow: Annotated[list[str], NoDecode] = []
    # Names resolved without DNS for guests' outbound HTTP, `name=address[|address]`
    # (like curl's --resolve); the policy still checks the addresses.
    egress_hosts: Annotated[list[str], NoDecode] = []
    # /metrics on a listener of its own (no key needed there, bind it privately); unset:
    # /metrics on the main port, for keys with the `metrics` scope.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    cors_origins: list[str] = []  # CORS is off unless origins are listed
    # Request header block: largest size, and how long it may take to arrive (431 / 408).
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    header_timeout_ms: int = Field(10_000, ge=100)

    @field_validator("api_hosts", "egress_allow", "egress_hosts", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        """`a,b,c` from the environment or a flag; a list from TOML or code."""
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'wasmlet.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        data_dir = getattr(init_settings, "init_kwargs", {}).get("data_dir")
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file(data_dir))
        return (init_settings, env_settings, toml)


def load_settings(**overrides: Any) -> Settings:
    """Build settings, dropping CLI overrides the user did not give (None)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
