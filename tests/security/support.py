"""Helpers for the attack tests: tenants with keys of their own on one real server."""

from __future__ import annotations

import httpx

from tests.helpers import ServerProcess


def mint_key(operator: httpx.Client, namespace: str, scopes: tuple[str, ...] = ("admin",)) -> str:
    """A key of `namespace` with these scopes, made by the operator (a tenant begins so)."""
    resp = operator.post(
        "/api/v1/keys", json={"namespace": namespace, "scopes": list(scopes), "name": "attack"}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


def client_with(server: ServerProcess, token: str | None, **kwargs: object) -> httpx.Client:
    """A client of `server` carrying `token` (or no key at all)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=server.url,
        timeout=30,
        headers=headers,
        **kwargs,  # type: ignore[arg-type]
    )
