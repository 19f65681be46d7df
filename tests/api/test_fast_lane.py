"""The HTTP fast lane (http_protocol.py): invocations served without an ASGI cycle.

It must be invisible to clients: the same answers as the ASGI path (a second server runs
with WASMLET_FAST_LANE=0 to compare), pipelining and connection handling as HTTP/1.1
wants, and every request it admits releases its namespace's place however it ends.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.support import (
    EXAMPLES,
    FIXTURES,
    assert_error,
    deployed,
    invocation_records,
    metric_value,
    started_during,
    unique,
)
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

GCD = EXAMPLES / "gcd" / "gcd.wat"
LOOP = FIXTURES / "loop.wat"
HELLO = "/api/v1/functions/hello-plugin/invoke"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    base = tmp_path_factory.mktemp("lanes")
    env = {"WASMLET_BODY_TIMEOUT_MS": "1500", "WASMLET_MAX_BODY_BYTES": "100000"}
    fast = ServerProcess(base / "fast", examples=True, env=env)
    asgi = ServerProcess(base / "asgi", examples=True, env={**env, "WASMLET_FAST_LANE": "0"})
    with fast, asgi:
        yield {"fast": fast, "asgi": asgi}


@pytest.fixture
def fast(servers: dict[str, ServerProcess]) -> ServerProcess:
    return servers["fast"]


def lane_count(client: httpx.Client, lane: str) -> float:
    return metric_value(client, "wasmlet_http_invocations_total", lane=lane)


# -- raw HTTP ----------------------------------------------------------------------------------


def exchange(server: ServerProcess, data: bytes, responses: int, timeout: float = 10) -> list:
    """Send `data` in one write; read `responses` responses (status, headers, body) and
    whether the server then closed the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        buf = b""
        parsed: list[Any] = []
        closed = False
        while len(parsed) < responses:
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                lines = buf[:head_end].decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if len(buf) >= head_end + 4 + length:
                    body = buf[head_end + 4 : head_end + 4 + length]
                    parsed.append((int(lines[0].split()[1]), headers, body))
                    buf = buf[head_end + 4 + length :]
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            buf += chunk
        if not closed:
            sock.settimeout(0.5)
            try:
                closed = sock.recv(1) == b""
            except TimeoutError:
                closed = False
    return [parsed, closed]


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


# -- the same answers ----------------------------------------------------------------------------


def _answers(server: ServerProcess, private: str) -> list[tuple[int, dict[str, str], bytes]]:
    key = server.auth_headers()
    requests: list[tuple[str, str, dict[str, str], bytes]] = [
        ("POST", HELLO, {}, b"Ada"),
        ("POST", HELLO + "/greet", {}, b""),
        ("POST", "/api/v1/functions/gcd/invoke", {}, b'{"args": [1071, 462]}'),
        ("POST", "/api/v1/functions/gcd/invoke", {}, b'{"args": [1, 2, 3]}'),
        ("POST", "/api/v1/functions/gcd/invoke", {}, b"not json"),
        ("POST", "/api/v1/functions/gcd/invoke/nope", {}, b'{"args": [1, 2]}'),
        ("GET", "/api/v1/functions/gcd/invoke", {}, b""),
        ("POST", "/api/v1/functions/no-such-fn/invoke", {}, b""),
        ("POST", "/api/v1/functions/bad%00name/invoke", {}, b""),
        ("GET", "/fn/hello/?name=Ada", {}, b""),
        ("POST", "/fn/echo/some/path?x=1&y=2", {"X-Custom": "v"}, b"\x00\x01 bytes"),
        ("POST", "/fn/hello-plugin/?export=greet", {}, b"Bob"),
        ("POST", f"/api/v1/functions/{private}/invoke", {}, b'{"args": [12, 18]}'),
        ("POST", f"/api/v1/functions/{private}/invoke", key, b'{"args": [12, 18]}'),
        ("POST", HELLO, {}, b"x" * 100_001),  # over WASMLET_MAX_BODY_BYTES
    ]  # fmt: skip
    answers = []
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path, headers, body in requests:
            resp = c.request(method, path, headers=headers, content=body)
            shown = {k: v for k, v in resp.headers.items() if k != "date"}
            answers.append((resp.status_code, shown, resp.content))
    return answers


def test_both_paths_give_the_same_answers(servers: dict[str, ServerProcess]) -> None:
    private = unique("private")
    for server in servers.values():
        with server.client() as admin:
            deployed(admin, private, GCD)  # private by default
            admin.post(f"/api/v1/functions/{private}/invoke", json={"args": [1, 1]})  # key seen
    with servers["fast"].client() as c:
        fast_before = lane_count(c, "fast")
    fast, asgi = _answers(servers["fast"], private), _answers(servers["asgi"], private)
    assert fast == asgi
    statuses = [status for status, _, _ in fast]
    # A private function without a key: 404, as a missing one (no existence oracle).
    assert statuses == [200, 200, 200, 422, 400, 404, 405, 404, 404, 200, 200, 200, 404, 200, 413]
    assert fast[0][2] == b'{"message": "Hello Ada"}'
    assert fast[0][1]["content-type"] == "application/json"
    assert fast[10][1]["x-echo-query"] == "x=1&y=2" and fast[10][2] == b"\x00\x01 bytes"
    with servers["fast"].client() as c:
        # Every answered invocation but the refused ones came through the fast lane...
        assert lane_count(c, "fast") - fast_before >= 10
    with servers["asgi"].client() as c:
        # ...and none on the server that has it switched off.
        assert lane_count(c, "fast") == 0
        assert lane_count(c, "asgi") >= 10


# -- connections ----------------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(fast: ServerProcess) -> None:
    """Requests sent back to back on one connection, fast-lane and ASGI ones mixed, are
    answered in the order they were sent."""
    data = (
        post(HELLO, b"one")
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        + post(HELLO, b"two")
        + post("/api/v1/functions/gcd/invoke", b'{"args": [12, 18]}')
        + b"GET /fn/hello/?name=three HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    (responses, closed) = exchange(fast, data, 5)
    assert [status for status, _, _ in responses] == [200] * 5
    bodies = [body for _, _, body in responses]
    assert bodies[0] == b'{"message": "Hello one"}'
    assert b"ok" in bodies[1]
    assert bodies[2] == b'{"message": "Hello two"}'
    assert bodies[3] == b'{"result": 6}'
    assert bodies[4] == b"Hello, three!\n"
    assert not closed


def test_connection_close_and_http_1_0(fast: ServerProcess) -> None:
    (responses, closed) = exchange(fast, post(HELLO, b"Ada", "Connection: close\r\n"), 1)
    assert responses[0][0] == 200 and responses[0][1]["connection"] == "close"
    assert closed
    http10 = b"POST " + HELLO.encode() + b" HTTP/1.0\r\nContent-Length: 3\r\n\r\nAda"
    (responses, closed) = exchange(fast, http10, 1)
    assert responses[0][0] == 200 and responses[0][2] == b'{"message": "Hello Ada"}'
    assert closed  # HTTP/1.0 without keep-alive


@pytest.mark.parametrize("expect", ["100-continue", "100-Continue \t"])
def test_expect_100_continue_is_answered_before_the_body(
    servers: dict[str, ServerProcess], expect: str
) -> None:
    """Both paths send `100 Continue`, then the answer once the body is in. Also when the
    header value ends in whitespace: httptools keeps it, and uvicorn's on_header (called by
    http_protocol.py; a copy of an older version of it did not) strips it."""
    for server in servers.values():
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            head = f"POST {HELLO} HTTP/1.1\r\nHost: x\r\nExpect: {expect}\r\n"
            sock.sendall(f"{head}Content-Length: 3\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:  # without the 100: a 408 at the body deadline
                data += sock.recv(65536)
            assert data == b"HTTP/1.1 100 Continue\r\n\r\n", data
            sock.sendall(b"Ada")
            while not data.endswith(b"}"):
                data += sock.recv(65536)
        assert data.split(b"\r\n\r\n")[1].startswith(b"HTTP/1.1 200 "), data
        assert data.endswith(b'{"message": "Hello Ada"}')


def test_a_trickled_body_ends_at_the_deadline(fast: ServerProcess) -> None:
    started = time.monotonic()
    # The socket's timeout only guards against a hang; the 408 shows the deadline ended it.
    with socket.create_connection(("127.0.0.1", fast.port), timeout=30) as sock:
        sock.sendall(f"POST {HELLO} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nAd".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b"body_timeout_ms" in data and b"connection: close" in data
    # Not before the configured 1.5 s (a lower bound: a loaded machine only answers later).
    assert elapsed >= 1.4, elapsed
    with fast.client(auth=False) as c:
        assert c.post(HELLO, content=b"Ada").json() == {"message": "Hello Ada"}


def test_a_call_that_cannot_run_inline_is_answered_from_a_task(fast: ServerProcess) -> None:
    """A guest that overruns its inline budget is replayed off the event loop; its answer
    still arrives, while other fast-lane requests are answered meanwhile."""
    name = unique("loop")
    with fast.client() as admin:
        deployed(admin, name, LOOP, timeout_ms=1500, visibility="public")
    with fast.client() as admin:
        hello_before = {r["id"] for r in invocation_records(admin, "hello-plugin")}
    with socket.create_connection(("127.0.0.1", fast.port), timeout=30) as slow:
        slow.sendall(post(f"/api/v1/functions/{name}/invoke", b'{"args": []}'))
        answered = 0
        with httpx.Client(base_url=fast.url, timeout=30) as c:
            # Fast-lane calls, one after the other, until the loop's answer arrives.
            while answered < 200 and not select.select([slow], [], [], 0)[0]:
                assert c.post(HELLO, content=b"Ada").json() == {"message": "Hello Ada"}
                answered += 1
                time.sleep(0.02)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            data += slow.recv(65536)
    assert data.startswith(b"HTTP/1.1 504"), data
    assert b'"timeout"' in data
    # The hello calls were admitted while the loop ran off the event loop, by the server's
    # own records.
    with fast.client() as admin:
        [loop] = invocation_records(admin, name)
        hellos = [
            r for r in invocation_records(admin, "hello-plugin") if r["id"] not in hello_before
        ]
    assert loop["error_code"] == "timeout", loop
    assert len(hellos) == answered
    assert started_during(hellos, loop), (loop, hellos)
    # Pipelined behind a call answered from a task, a request waits its turn.
    data = post(f"/api/v1/functions/{name}/invoke", b'{"args": []}') + post(HELLO, b"next")
    (responses, closed) = exchange(fast, data, 2)
    assert [status for status, _, _ in responses] == [504, 200]
    assert responses[1][2] == b'{"message": "Hello next"}' and not closed


# -- places are released ---------------------------------------------------------------------------


def test_every_admitted_request_gives_its_place_back(server_factory: Any) -> None:
    """A tenant limited to one invocation at a time: requests refused for their body, or
    abandoned halfway through it, must not keep that one place."""
    server = server_factory(
        env={
            "WASMLET_QUOTA_MAX_CONCURRENCY": "1",
            "WASMLET_MAX_BODY_BYTES": "1000",
            "WASMLET_BODY_TIMEOUT_MS": "800",
        }
    )
    ns = unique("lane")[:20]
    with server.client() as admin:
        resp = admin.post("/api/v1/keys", json={"scopes": ["admin"], "namespace": ns})
        token = resp.json()["token"]
    auth = f"Authorization: Bearer {token}\r\n"
    path = "/api/v1/functions/gcd/invoke"
    args = b'{"args": [12, 18]}'
    with httpx.Client(
        base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        deployed(c, "gcd", GCD)

        def works() -> None:
            assert c.post(path, content=args).json() == {"result": 6}

        works()  # the key is verified, the deploy seen: its requests take the fast lane
        before = lane_count(c, "fast")
        # Declared too large: refused from the head.
        (responses, _) = exchange(
            server,
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 5000\r\n\r\n".encode(),
            1,
        )
        assert responses[0][0] == 413
        works()
        # Chunked past the limit: refused while it arrives.
        chunked = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        (responses, _) = exchange(server, chunked + b"400\r\n" + b"x" * 1024 + b"\r\n" * 2, 1)
        assert responses[0][0] == 413
        works()
        # Abandoned halfway: the client goes away.
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n{{".encode()
            )
            time.sleep(0.2)
        time.sleep(0.2)
        works()
        # Too slow: the body deadline passes.
        (responses, closed) = exchange(
            server,
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n{{".encode(),
            1,
        )
        assert responses[0][0] == 408 and closed
        works()
        assert lane_count(c, "fast") - before == 4  # each works() after the first
        assert_error(
            c.post(path, content=b"[", headers={"Content-Length": "1"}), 400, "invalid_request"
        )
        works()
