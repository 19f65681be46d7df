"""KV quotas per namespace: a guest looping writes left 17k rows in 10 s, however small
the tenant's quota. Now `kv_max_keys` holds over every scope of the namespace (its
functions' and its global one) and every write path (guest set and incr, API PUT).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.support import assert_error, deployed
from tests.helpers import ServerProcess
from tests.security.guests import guest_bytes
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration

QUOTA = 50
KV = "/api/v1/kv"


@pytest.fixture(scope="module")
def probe() -> bytes:
    return guest_bytes("tenant_probe.c", plugin=True)


@pytest.fixture(scope="module")
def tenant(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as operator:
        token = mint_key(operator, "kvq")
        resp = operator.put("/api/v1/namespaces/kvq/quota", json={"kv_max_keys": QUOTA})
        assert resp.status_code == 200, resp.text
    with client_with(server, token) as client:
        yield client


def stored_keys(client: httpx.Client, *scopes: str) -> int:
    total = 0
    for scope in scopes:
        resp = client.get(f"{KV}/{scope}/keys", params={"limit": 10_000})
        assert resp.status_code == 200, resp.text
        total += len(resp.json()["keys"])
    return total


def test_a_guest_looping_writes_cannot_pass_the_key_quota(
    tenant: httpx.Client, probe: bytes
) -> None:
    grants = ["kv", "kv:global", "call:none"]
    for name in ("filler", "filler2"):
        deployed(tenant, name, probe, abi="extism", export="fill", capability=grants)
    answers: list[httpx.Response] = []
    stop = time.monotonic() + 10

    def loop(worker: int) -> None:
        round_ = 0
        while time.monotonic() < stop:
            flags = round_ % 2  # own persistent scope, then the global one
            fn = ("filler", "filler2")[worker % 2]
            body = f"{flags} w{worker}r{round_}-"
            answers.append(tenant.post(f"/api/v1/functions/{fn}/invoke/fill", content=body))
            round_ += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert stored_keys(tenant, "filler", "filler2", "global") <= QUOTA
    refused = [r for r in answers if r.status_code != 200]
    assert refused, "no write was ever refused"
    assert "quota of 50 keys" in assert_error(refused[-1], 500, "guest_error")

    # The API's writes are held to the same quota, and say so.
    resp = tenant.put(f"{KV}/global/one-more", content=b"x")
    assert_error(resp, 429, "quota_exceeded", "quota of 50 keys")
    assert stored_keys(tenant, "filler", "filler2", "global") <= QUOTA
    assert_error(tenant.post(f"{KV}/global/another/incr"), 429, "quota_exceeded")
