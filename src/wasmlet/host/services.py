"""What capabilities need from the server process, built once and shared by every pool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from wasmlet.config import Settings
from wasmlet.host.kv.base import KvStore
from wasmlet.host.kv.quota import CountingStore, Limits, QuotaKv
from wasmlet.host.preopens import remove_folder

if TYPE_CHECKING:
    import sqlalchemy

    from wasmlet.host.context import HostContext


class SecretSource(Protocol):
    def get(self, function: str, key: str) -> str | None:
        """The decrypted secret, or None."""

    def values(self, function: str) -> list[str]:
        """Every decrypted secret value of a function (to redact them from logs/errors)."""

    def drop_function(self, function: str) -> int:
        """Delete every secret of a function."""


# (calling context, callee name, input bytes) -> output bytes; raises HostError.
FunctionCaller = Callable[["HostContext", str, bytes], bytes]


@dataclass
class HostServices:
    settings: Settings
    kv_memory: KvStore
    kv_persistent: KvStore
    secrets: SecretSource | None = None
    call: FunctionCaller | None = None  # set by the invoker of this process
    # namespace -> its egress allow list, None for the node's (set from the quotas)
    egress_allow: Callable[[str], tuple[str, ...] | None] | None = None

    def limit_kv(self, limits: Limits) -> None:
        """Hold both stores to these per-namespace quotas (host/kv/quota.py)."""
        for store in (self.kv_memory, self.kv_persistent):
            if isinstance(store, QuotaKv):
                store.limits = limits

    def drop_function(self, name: str) -> None:
        """A function was deleted: its own keys, secrets and files go with it (a function
        deployed later under the name starts empty)."""
        remove_folder(self.settings.data_dir / "files", name)
        scope = f"fn:{name}"
        self.kv_memory.drop_scope(scope)
        self.kv_persistent.drop_scope(scope)
        if self.secrets is not None:
            self.secrets.drop_function(name)

    def close(self) -> None:
        self.kv_memory.close()
        self.kv_persistent.close()


def build_services(settings: Settings, engine: sqlalchemy.Engine | None = None) -> HostServices:
    """In-memory KV always; persistent KV on Redis when configured, else on the database."""
    from wasmlet.host.kv.memory import MemoryKv

    memory = MemoryKv(settings.kv_memory_max_entries, settings.kv_memory_max_bytes)
    persistent: CountingStore
    if settings.redis_url:
        from wasmlet.host.kv.redis_store import RedisKv

        persistent = RedisKv(settings.redis_url, prefix=settings.redis_kv_prefix)
    elif engine is not None:
        from wasmlet.host.kv.sql import SqlKv

        persistent = SqlKv(engine)
    else:  # runtime-only use (tests, benchmarks): nothing outlives the process anyway
        persistent = MemoryKv(settings.kv_memory_max_entries, settings.kv_memory_max_bytes)
    secrets = None
    if engine is not None:
        from wasmlet.host.secrets import SecretStore

        secrets = SecretStore(engine, settings)
    # Every write of either store, from guests or the API, passes the namespace's quota.
    return HostServices(settings, QuotaKv(memory), QuotaKv(persistent), secrets)
