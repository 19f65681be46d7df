"""Versions: PATCH makes a new version without re-upload, identical redeploys are idempotent,
rollback switches what runs, delete stops serving at once and collects unreferenced blobs."""

from __future__ import annotations

import httpx
import pytest

from tests.api.support import (
    FIXTURES,
    assert_error,
    blob_path,
    deploy,
    deployed,
    invocation_records,
    invoke,
    result_of,
    sha256,
    unique,
    unique_module,
)
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

MULTI = FIXTURES / "multi.wat"


def _versions(client: httpx.Client, name: str) -> list[dict]:
    resp = client.get(f"/api/v1/functions/{name}/versions")
    assert resp.status_code == 200, resp.text
    return resp.json()["versions"]


def _active(client: httpx.Client, name: str) -> dict:
    resp = client.get(f"/api/v1/functions/{name}")
    assert resp.status_code == 200, resp.text
    return resp.json()["active_version"]


def _patch(client: httpx.Client, name: str, **fields: object) -> dict:
    resp = client.patch(f"/api/v1/functions/{name}", json=fields)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_patch_creates_a_version_of_the_same_module(client: httpx.Client) -> None:
    name = unique("patched")
    first = deployed(client, name, MULTI, export="divmod")["active_version"]
    assert first["seq"] == 1
    assert first["spec"]["timeout_ms"] == 5000  # the platform default, stored with the version

    view = _patch(client, name, timeout_ms=1234)
    second = view["active_version"]
    assert view["version_count"] == 2
    assert second["spec"]["timeout_ms"] == 1234
    assert second["module_digest"] == first["module_digest"]
    assert second["digest"] != first["digest"]
    assert second["seq"] == 2

    versions = _versions(client, name)
    assert len(versions) == 2
    assert {v["module_digest"] for v in versions} == {first["module_digest"]}
    assert [v["active"] for v in versions if v["digest"] == second["digest"]] == [True]
    assert [v["active"] for v in versions if v["digest"] == first["digest"]] == [False]
    assert result_of(invoke(client, name, [7, 2])) == [3, 1]  # export unchanged


def test_patch_keeps_fields_it_does_not_name(client: httpx.Client) -> None:
    """A PATCH changes only the fields it carries; earlier patches stay in force."""
    name = unique("patched-twice")
    deployed(client, name, MULTI, export="divmod", pool_size=4)
    _patch(client, name, timeout_ms=1234)
    spec = _patch(client, name, memory_mb=32)["active_version"]["spec"]
    assert spec["memory_mb"] == 32
    assert spec["export"] == "divmod"
    assert spec["timeout_ms"] == 1234, spec
    assert spec["pool_size"] == 4, spec


def test_patch_rejections_make_no_version(client: httpx.Client) -> None:
    name = unique("patch-bad")
    deployed(client, name, MULTI, export="divmod")
    for fields in ({"timeout_ms": 0}, {"export": "nope"}, {"bogus": 1}, {"abi": "cobol"}):
        resp = client.patch(f"/api/v1/functions/{name}", json=fields)
        assert_error(resp, 422, "invalid_request")
    assert len(_versions(client, name)) == 1


def test_identical_redeploy_is_idempotent(client: httpx.Client) -> None:
    name = unique("same")
    resp = deploy(client, name, MULTI, export="divmod")
    assert resp.status_code == 201, resp.text
    digest = resp.json()["active_version"]["digest"]
    # Same bytes (as WAT or as binary) and same spec: 200, the same version, nothing new.
    resp = deploy(client, name, MULTI, export="divmod")
    assert resp.status_code == 200, resp.text
    assert resp.json()["active_version"]["digest"] == digest
    resp = deploy(client, name, MULTI, spec={"export": "divmod", "timeout_ms": 5000})
    assert resp.status_code == 200, resp.text
    assert len(_versions(client, name)) == 1
    # After a PATCH, deploying the patched spec again is also no new version.
    patched = _patch(client, name, timeout_ms=777)["active_version"]["digest"]
    resp = deploy(client, name, MULTI, export="divmod", timeout_ms=777)
    assert resp.status_code == 200, resp.text
    assert resp.json()["active_version"]["digest"] == patched
    assert len(_versions(client, name)) == 2
    # A different spec is a new version.
    resp = deploy(client, name, MULTI, export="add64")
    assert resp.status_code == 201, resp.text
    assert len(_versions(client, name)) == 3


def test_rollback_switches_what_runs(client: httpx.Client) -> None:
    name = unique("rollback")
    v1 = deployed(client, name, MULTI, export="divmod", timeout_ms=2000)["active_version"]
    assert result_of(invoke(client, name, [7, 2])) == [3, 1]
    v2 = _patch(client, name, export="add64", timeout_ms=3000)["active_version"]
    assert result_of(invoke(client, name, [7, 2])) == 9
    assert v2["spec"]["export"] == "add64"

    # Roll back by a digest prefix, without the sha256: prefix.
    prefix = v1["digest"].removeprefix("sha256:")[:12]
    resp = client.post(f"/api/v1/functions/{name}/rollback", json={"digest": prefix})
    assert resp.status_code == 200, resp.text
    assert resp.json()["active_version"]["digest"] == v1["digest"]
    active = _active(client, name)
    assert active["digest"] == v1["digest"]
    assert active["spec"]["export"] == "divmod"
    assert active["spec"]["timeout_ms"] == 2000
    # Invocations use the old spec right away, on every route.
    assert result_of(invoke(client, name, [7, 2])) == [3, 1]
    assert result_of(client.get(f"/fn/{name}?a=9&b=4")) == [2, 1]
    assert len(_versions(client, name)) == 2  # a rollback creates no version

    # And forward again with the full digest.
    resp = client.post(f"/api/v1/functions/{name}/rollback", json={"digest": v2["digest"]})
    assert resp.status_code == 200, resp.text
    assert result_of(invoke(client, name, [7, 2])) == 9

    resp = client.post(f"/api/v1/functions/{name}/rollback", json={"digest": "ffffffffffff"})
    assert_error(resp, 404, "not_found")
    resp = client.post(f"/api/v1/functions/{name}/rollback", json={"digest": ""})
    assert_error(resp, 422, "invalid_request")  # the empty prefix matches both versions
    assert _active(client, name)["digest"] == v2["digest"]


def test_rollback_restores_the_old_limits(client: httpx.Client) -> None:
    name = unique("loop-limits")
    v1 = deployed(client, name, FIXTURES / "loop.wat", export="spin", timeout_ms=300)
    _patch(client, name, timeout_ms=2500)
    resp = client.post(
        f"/api/v1/functions/{name}/rollback", json={"digest": v1["active_version"]["digest"]}
    )
    assert resp.status_code == 200, resp.text
    # The 300 ms version ran, not the 2500 ms one: the error names its limit, and the
    # record its version.
    assert_error(client.post(f"/api/v1/functions/{name}/invoke"), 504, "timeout", "300 ms")
    [record] = invocation_records(client, name)
    assert record["version"] == v1["active_version"]["digest"], record
    assert record["error_code"] == "timeout"


def test_delete_stops_serving_and_collects_the_blob(
    client: httpx.Client, api_server: ServerProcess
) -> None:
    name = unique("doomed")
    module = unique_module(name)
    view = deployed(client, name, module, export="twice")
    module_digest = view["active_version"]["module_digest"]
    _patch(client, name, timeout_ms=999)  # two versions, one module
    blob = blob_path(api_server.data_dir, module_digest)
    assert blob.is_file()
    assert sha256(blob.read_bytes()) == module_digest
    assert result_of(invoke(client, name, [21])) == 42

    resp = client.delete(f"/api/v1/functions/{name}")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"deleted": name, "blobs_removed": 1}
    assert_error(invoke(client, name, [21]), 404, "not_found")
    assert_error(client.get(f"/fn/{name}?x=21"), 404, "not_found")
    assert_error(client.get(f"/api/v1/functions/{name}"), 404, "not_found")
    assert_error(client.get(f"/api/v1/functions/{name}/versions"), 404, "not_found")
    assert not blob.exists()
    cached = list(
        (api_server.data_dir / "cache").rglob(module_digest.removeprefix("sha256:") + "*")
    )
    assert cached == [], "the compiled artifact of a deleted module was kept"

    # The name can be used again afresh.
    again = deployed(client, name, module, export="echo")
    assert again["version_count"] == 1
    assert result_of(invoke(client, name, [21])) == 21
    assert blob.is_file()


def test_shared_blob_is_kept_while_referenced(
    client: httpx.Client, api_server: ServerProcess
) -> None:
    first, second = unique("shared-a"), unique("shared-b")
    module = unique_module(first)
    digest = deployed(client, first, module, export="twice")["active_version"]["module_digest"]
    deployed(client, second, module, export="echo")
    blob = blob_path(api_server.data_dir, digest)

    resp = client.delete(f"/api/v1/functions/{first}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["blobs_removed"] == 0
    assert blob.is_file(), "a blob still used by another function was removed"
    assert result_of(invoke(client, second, [5])) == 5
    assert_error(invoke(client, first, [5]), 404, "not_found")

    resp = client.delete(f"/api/v1/functions/{second}")
    assert resp.json()["blobs_removed"] == 1
    assert not blob.exists()


def test_delete_leaves_other_functions_alone(client: httpx.Client) -> None:
    """Deleting one function leaves the others alone."""
    keep, drop = unique("keep"), unique("drop")
    deployed(client, keep, MULTI, export="add64")
    deployed(client, drop, MULTI, export="add64")
    assert client.delete(f"/api/v1/functions/{drop}").status_code == 200
    assert result_of(invoke(client, keep, [2**40, 1])) == 2**40 + 1
    assert_error(invoke(client, drop, [1, 1]), 404, "not_found")
    names = [f["name"] for f in client.get("/api/v1/functions").json()["functions"]]
    assert keep in names
    assert drop not in names
