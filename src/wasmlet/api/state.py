"""Everything a server process holds, built once at startup and shared by the routes."""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from pathlib import Path

from wasmlet.api.access import Access
from wasmlet.auth.keys import KeyStore
from wasmlet.auth.quotas import Limiter, deploy_check, spec_ceilings
from wasmlet.config import Settings
from wasmlet.host.services import HostServices, build_services
from wasmlet.metering import Meter
from wasmlet.registry.blobs import BlobStore
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.db import make_engine, make_sessionmaker, upgrade
from wasmlet.registry.deploy import Deployer
from wasmlet.registry.repository import Repository
from wasmlet.runtime.invoker import Invoker, Runtime


@dataclass
class AppState:
    settings: Settings
    repo: Repository
    blobs: BlobStore
    changes: ChangeSignal
    runtime: Runtime
    deployer: Deployer
    meter: Meter
    invoker: Invoker
    services: HostServices
    keys: KeyStore
    limiter: Limiter
    access: Access

    def close(self) -> None:
        self.invoker.close()
        self.services.close()
        self.meter.stop()
        self.runtime.close()


def migrate(settings: Settings) -> None:
    """Upgrade the schema once, even when several workers start together."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = Path(settings.data_dir) / "migrate.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        engine = make_engine(settings.db_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()


def build_state(settings: Settings) -> AppState:
    migrate(settings)
    engine = make_engine(settings.db_url)
    repo = Repository(make_sessionmaker(engine))
    blobs = BlobStore(settings.data_dir / "blobs")
    changes = ChangeSignal(settings.data_dir)
    runtime = Runtime(settings)
    deployer = Deployer(settings, runtime.engine, runtime.cache, blobs, repo, changes)
    meter = Meter(repo, retention=settings.invocation_retention)
    meter.start()
    services = build_services(settings, engine)
    deployer.on_delete.append(services.drop_function)
    invoker = Invoker(
        settings, runtime, repo, blobs, ChangeSignal(settings.data_dir), meter, services
    )
    sessions = make_sessionmaker(engine)
    keys = KeyStore(sessions, settings.data_dir)
    limiter = Limiter(settings, sessions)
    services.limit_kv(lambda ns: _kv_limits(limiter, ns))
    services.egress_allow = lambda namespace: limiter.quota(namespace).egress_allow
    deployer.check_quota = deploy_check(limiter, repo.namespace_usage)
    deployer.ceilings = invoker.ceilings = spec_ceilings(limiter)
    access = Access(keys, limiter, runtime.executor)
    return AppState(
        settings,
        repo,
        blobs,
        changes,
        runtime,
        deployer,
        meter,
        invoker,
        services,
        keys,
        limiter,
        access,
    )


def _kv_limits(limiter: Limiter, namespace: str) -> tuple[int, int]:
    quota = limiter.quota(namespace)
    return quota.kv_max_keys, quota.kv_max_bytes
