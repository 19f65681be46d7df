"""Attack: a tenant deploys another tenant's module bytes by naming their digest.

Blobs are stored once by content, for every namespace. The WasmEngine deploy takes a blob
digest (`function_image: sha256:...`) or a file of the data dir's import/ folder. Knowing a
digest (a tenant may publish it, a build may be reproducible) must not let another tenant run
those bytes or even learn that someone deployed them; and the import/ folder is the
operator's staging area.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.api.support import assert_error, deployed
from tests.helpers import ServerProcess
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def tenant(server: ServerProcess, operator: httpx.Client) -> Iterator[httpx.Client]:
    with client_with(server, mint_key(operator, "blobs-b")) as client:
        yield client


def _compat_deploy(client: httpx.Client, name: str, image: str) -> httpx.Response:
    return client.post("/function/deploy", json={"function_name": name, "function_image": image})


def test_a_digest_of_another_tenants_bytes_opens_nothing(
    operator: httpx.Client, tenant: httpx.Client
) -> None:
    secret_module = _module(f"op-{uuid.uuid4().hex[:8]}")
    view = deployed(operator, "proprietary", secret_module)
    digest = view["active_version"]["module_digest"]
    view_bytes = _wasm(secret_module)
    assert digest == "sha256:" + hashlib.sha256(view_bytes).hexdigest()
    missing = "sha256:" + hashlib.sha256(b"nothing anyone stored").hexdigest()

    known = _compat_deploy(tenant, "stolen", digest)
    unknown = _compat_deploy(tenant, "stolen", missing)
    assert_error(known, 404, "not_found", digest)
    assert_error(unknown, 404, "not_found", missing)
    assert known.json()["error"]["message"].replace(digest, "D") == unknown.json()["error"][
        "message"
    ].replace(missing, "D")  # the same answer: no oracle either
    assert tenant.get("/api/v1/functions/stolen").status_code == 404

    # Holding the bytes is what counts: uploaded by the tenant, the digest is its to use.
    up = tenant.post("/api/v1/blobs", content=view_bytes)
    assert up.status_code == 201, up.text
    assert up.json()["digest"] == digest
    assert _compat_deploy(tenant, "stolen", digest).status_code == 200
    # ... and the operator's namespace names any blob it stores.
    assert _compat_deploy(operator, "again", digest).status_code == 200


def test_a_version_of_its_own_lets_a_tenant_name_its_digest(tenant: httpx.Client) -> None:
    view = deployed(tenant, "own", _module(f"own-{uuid.uuid4().hex[:8]}"))
    digest = view["active_version"]["module_digest"]
    assert _compat_deploy(tenant, "own-copy", digest).status_code == 200


def test_the_import_folder_is_the_operators(
    server: ServerProcess, operator: httpx.Client, tenant: httpx.Client
) -> None:
    folder = server.data_dir / "import"
    folder.mkdir(exist_ok=True)
    (folder / "staged.wasm").write_bytes(_wasm(_module("staged")))
    for image in ("staged.wasm", "absent.wasm"):
        resp = _compat_deploy(tenant, "staged", image)
        assert_error(resp, 422, "invalid_request", "operator key")
    assert tenant.get("/api/v1/functions/staged").status_code == 404
    assert _compat_deploy(operator, "staged", "staged.wasm").status_code == 200


def _module(tag: str) -> bytes:
    """WAT for a one-export core module whose bytes no other test has (tag in a data
    segment): the WasmEngine deploy names no export, so there must be one."""
    return (
        '(module (memory (export "memory") 1) (data (i32.const 16) "' + tag + '")\n'
        '  (func (export "run") (param $x i32) (result i32) (local.get $x)))'
    ).encode()


def _wasm(wat: bytes) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(wat.decode()))
