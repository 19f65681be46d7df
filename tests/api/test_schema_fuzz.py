"""schemathesis against a real server's /openapi.json: every operation, authenticated,
with data that fits the schema and data that does not. No response may be a server error,
every response must match what the schema documents for its status, and every error must
be DESIGN.md's `{"error": {"code", "message"}}` with the code that goes with its status.

schemathesis's pytest integration needs the schema at collection time, or (lazily, from a
fixture) pytest internals that pytest 9 changed; so the operations are driven through its
public Python API instead (`APIOperation.as_strategy` under hypothesis `@given`), all from
one test per generation mode, with a report of every failing operation at the end.

Examples are bounded and derandomized: the same cases on every run, well under a minute on
two cores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

# Per operation and mode. FUZZ_EXAMPLES=500 makes a deeper (slow) run by hand.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: a failure is reported as found, with the request to reproduce it.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
# The status each error code goes with (DESIGN.md); 5xx never happen here.
ERROR_CODES = {
    400: {"invalid_request"},
    401: {"unauthorized"},
    403: {"forbidden"},
    404: {"not_found"},
    405: {"invalid_request"},
    408: {"invalid_request"},
    409: {"conflict"},
    413: {"payload_too_large"},
    415: {"invalid_request"},
    422: {"invalid_request"},
    429: {"rate_limited", "quota_exceeded"},
}
# Invocation routes with their name pinned to a bundled example, so generated bodies and
# paths reach a real guest and its ABI adapter, not only the "not found" answer. What comes
# back may be the guest's own answer (hello says 400 "missing name" in plain text, echo's
# headers carry the path), so these runs check only that a server error is the guest's.
PINNED = {
    ("POST", "/api/v1/functions/{name}/invoke"): {"name": "gcd"},
    ("POST", "/api/v1/functions/{name}/invoke/{export}"): {"name": "gcd"},
    ("GET", "/fn/{name}/{path}"): {"name": "echo"},
    ("POST", "/fn/{name}/{path}"): {"name": "echo"},
    ("PUT", "/fn/{name}/{path}"): {"name": "hello"},
    ("DELETE", "/fn/{name}/{path}"): {"name": "hello-plugin"},
}
GUEST_FAILURES = {"guest_trap", "guest_error", "timeout", "memory_limit", "overloaded"}
# Operations whose responses are not checked against the schema (none: bugs this fuzzing
# found are fixed and kept as regression tests at the end of this file).
SCHEMA_CHECK_OFF: set[tuple[str, str]] = set()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("fuzz") / "data", examples=True) as proc:
        yield proc


@pytest.fixture(scope="module")
def auth_headers(server: ServerProcess) -> dict[str, str]:
    """The headers the tests' client adds (its API key), without httpx's own defaults."""
    defaults = httpx.Client().headers
    with server.client() as client:
        return {k: v for k, v in client.headers.items() if defaults.get(k) != v}


@pytest.fixture(scope="module")
def schema(server: ServerProcess, auth_headers: dict[str, str]) -> Any:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=auth_headers)


def operations(schema: Any) -> list[Any]:
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())  # raises for an operation its schema does not describe well
    return found


def test_the_schema_describes_every_route(schema: Any) -> None:
    """The fuzzing below covers everything: every operation loads, the raw hot-path routes
    included (api/openapi.py)."""
    labels = {f"{op.method.upper()} {op.path}" for op in operations(schema)}
    assert len(labels) >= 35, sorted(labels)
    for expected in [
        "POST /api/v1/functions",
        "POST /api/v1/functions/{name}/invoke",
        "POST /api/v1/functions/{name}/invoke/{export}",
        "POST /fn/{name}/{path}",
        "POST /function/invoke",
        "POST /function/deploy",
        "PUT /api/v1/kv/{namespace}/{key}",
        "POST /api/v1/routes",
        "PUT /api/v1/functions/{name}/secrets/{key}",
    ]:
        assert expected in labels, sorted(labels)


def error_shape(response: Any, label: str) -> None:
    """An error answer is JSON `{"error": {"code", "message"}}` with the status's code."""
    status = response.status_code
    if status < 400:
        return
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), f"{label}: {status} {content_type}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, f"{label}: {body}"
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, f"{label}: {body}"
    assert error["code"] in ERROR_CODES.get(status, set()), f"{label}: {status} {body}"
    assert isinstance(error["message"], str) and error["message"], f"{label}: {body}"


def guest_blame(response: Any, label: str) -> None:
    """A 5xx from a guest route names the guest's failure, never a host error."""
    if response.status_code < 500:
        return
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    assert code in GUEST_FAILURES, f"{label}: {response.status_code} {response.content[:300]!r}"


def negatable(operation: Any) -> bool:
    """Whether schemathesis can make data that breaks the operation's schema: not when its
    only inputs are unconstrained string path parameters (it would try ~460 cases, then
    give up)."""
    raw = operation.definition.raw
    if raw.get("requestBody"):
        return True
    for parameter in raw.get("parameters", []):
        schema = parameter.get("schema", {})
        if parameter.get("in") != "path" or schema.get("type") != "string":
            return True
        if set(schema) - {"type", "title", "description"}:
            return True
    return False


def fuzz(
    server: ServerProcess,
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    path_parameters: dict[str, str] | None = None,
) -> Callable[[], None]:
    label = f"{operation.method.upper()} {operation.path}"
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    guest = path_parameters is not None  # the answer may be the guest's own
    checks = [] if guest else [not_a_server_error]
    if not guest and (operation.method.upper(), operation.path) not in SCHEMA_CHECK_OFF:
        checks.append(response_schema_conformance)

    @SETTINGS
    @given(case=strategy)
    def run(case: Case) -> None:
        try:
            response = case.call(base_url=server.url, headers=headers, timeout=30)
        except requests.RequestException as exc:  # e.g. closed without an answer
            curl = case.as_curl_command(base_url=server.url)
            raise AssertionError(f"{exc!r}\nReproduce with: {curl}") from None
        where = f"{label}: {case.as_curl_command(base_url=server.url)}"
        if guest:
            guest_blame(response, where)
        else:
            case.validate_response(response, checks=checks, headers=headers)
            error_shape(response, where)

    return run


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_every_operation(
    server: ServerProcess, schema: Any, auth_headers: dict[str, str], mode: GenerationMode
) -> None:
    failures: list[str] = []
    runs = 0
    for operation in operations(schema):
        if mode is GenerationMode.NEGATIVE and not negatable(operation):
            continue
        key = (operation.method.upper(), operation.path)
        variants = [None, PINNED[key]] if key in PINNED else [None]
        for pinned in variants:
            where = f"{key[0]} {key[1]}" + (f" with {pinned}" if pinned else "")
            try:
                run = fuzz(server, operation, mode, auth_headers, pinned)
            except Exception as exc:  # schemathesis cannot build negative data for it
                if mode is GenerationMode.NEGATIVE:
                    continue
                failures.append(f"{where}: no cases: {exc!r}")
                continue
            try:
                run()
                runs += 1
            except hypothesis.errors.Unsatisfiable:
                continue  # no way to break this operation's (parameterless) schema
            except (FailureGroup, Exception) as exc:  # a FailureGroup is no Exception
                failures.append(f"{where} [{mode.value}]:\n{exc}")
    assert not failures, "\n\n".join(failures)
    # Negative data cannot be made for a bare string path parameter or no parameters at all.
    minimum = 40 if mode is GenerationMode.POSITIVE else 20
    assert runs >= minimum, f"only {runs} operations were fuzzed"
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# -- bugs found by the fuzzing above, for fixes outside the test suite ----------------------


def test_key_timestamps_are_rfc3339(server: ServerProcess) -> None:
    with server.client() as client:
        keys = client.get("/api/v1/keys").json()["keys"]
    assert keys
    for key in keys:
        assert datetime.fromisoformat(key["created_at"]).tzinfo is not None, key


def test_guest_header_with_a_control_character_gets_an_answer(server: ServerProcess) -> None:
    """Found by this fuzzing: echo copies the request path into X-Echo-Path; a control
    character there used to reach uvicorn, which dropped the connection without an answer
    (now the CGI adapter refuses the header: guest_error)."""
    with server.client() as client:
        resp = client.get("/fn/echo/a%01b")
        if resp.status_code >= 500:
            assert resp.json()["error"]["code"] == "guest_error", resp.text
        else:
            assert resp.status_code == 200, resp.text
            assert all(v.isprintable() for v in resp.headers.values()), resp.headers
        assert client.get("/healthz").status_code == 200


def test_a_json_result_matches_the_documented_response(
    server: ServerProcess, schema: Any, auth_headers: dict[str, str]
) -> None:
    operation = schema["/api/v1/functions/{name}/invoke"]["POST"]
    case = operation.Case(
        path_parameters={"name": "gcd"}, body={"args": [12, 18]}, media_type="application/json"
    )
    response = case.call(base_url=server.url, headers=auth_headers, timeout=30)
    assert response.status_code == 200, response.text
    case.validate_response(response, checks=[response_schema_conformance], headers=auth_headers)


def test_an_enormous_quota_is_refused(server: ServerProcess) -> None:
    with server.client() as client:
        resp = client.put("/api/v1/namespaces/fuzz/quota", json={"max_concurrency": 2**80})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"
