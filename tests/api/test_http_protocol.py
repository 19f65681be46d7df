"""What http_protocol.py relies on in uvicorn and httptools, checked on the installed
versions and a real protocol instance, without a server process.

The fast lane uses uvicorn's internals (pinned exactly in pyproject.toml). When a version
bump removes or renames one, these tests say which, instead of the fast lane failing with
an AttributeError on the first request, or an override silently never being called.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httptools
import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from wasmlet import http_protocol
from wasmlet.api.hotpath import HotPath
from wasmlet.config import Settings
from wasmlet.deadlines import Deadlines
from wasmlet.http_protocol import RELIED_ON, BoundedHttpToolsProtocol, _FastCycle

# uvicorn's protocol reads these of a cycle only after checking `response_complete`, which
# is True for a _FastCycle whenever uvicorn's own callbacks run (the fast lane handles the
# body of a request it serves itself).
_READ_ONLY_BEFORE_THE_RESPONSE_IS_COMPLETE = {"body", "more_body"}


@pytest.fixture(autouse=True)
def header_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh timer for header deadlines: each test runs its own event loop, and the
    module's timer would otherwise stay armed on a loop that has ended."""
    monkeypatch.setattr(http_protocol, "_HEADS", Deadlines())


class Transport:
    """Just enough of an asyncio transport for the protocol."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def hello(scope: dict, receive: Callable, send: Callable) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


def protocol(app: Any = hello, **config: Any) -> tuple[BoundedHttpToolsProtocol, Transport]:
    """A connected protocol; call inside a running loop (the header deadline needs one)."""
    config.setdefault("proxy_headers", False)  # as server.py: the app is not wrapped
    cfg = Config(app=app, http=BoundedHttpToolsProtocol, log_config=None, **config)
    proto = BoundedHttpToolsProtocol(
        config=cfg, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport


def missing(obj: object, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not hasattr(obj, name)]


def test_the_module_level_names_exist() -> None:
    for module_name in ("uvicorn.protocols.http.httptools_impl", "httptools"):
        module = importlib.import_module(module_name)
        assert missing(module, RELIED_ON[module_name]) == [], module_name


def test_the_instance_attributes_exist() -> None:
    """On a real protocol that has served a request through uvicorn's own path."""

    async def main() -> None:
        proto, transport = protocol()
        proto.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.gather(*proto.tasks)
        assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
        assert missing(proto, RELIED_ON["HttpToolsProtocol"]) == []
        assert isinstance(proto.parser, httptools.HttpRequestParser)
        assert missing(proto.parser, RELIED_ON["HttpRequestParser"]) == []
        assert missing(proto.server_state, RELIED_ON["ServerState"]) == []
        # uvicorn's cycle, which _FastCycle stands in for, has what _FastCycle has.
        assert isinstance(proto.cycle, RequestResponseCycle)
        assert missing(proto.cycle, _FastCycle.__slots__) == []
        proto.connection_lost(None)

    asyncio.run(main())


def test_every_override_overrides_something() -> None:
    """A callback uvicorn renamed would leave ours uncalled: the header limits would stop
    applying, or the fast lane would never start."""
    ours = [
        name
        for name, value in vars(BoundedHttpToolsProtocol).items()
        if callable(value) and not name.startswith("_")
    ]
    assert "on_header" in ours and "on_headers_complete" in ours
    assert [name for name in ours if not hasattr(HttpToolsProtocol, name)] == []


def test_fast_cycle_has_what_uvicorn_reads_of_a_cycle() -> None:
    """Every `self.cycle.<name>` in uvicorn's protocol, read from its source."""
    tree = ast.parse(inspect.getsource(HttpToolsProtocol))
    read = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "cycle"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }
    assert "response_complete" in read  # the walk found something
    assert read - set(_FastCycle.__slots__) - _READ_ONLY_BEFORE_THE_RESPONSE_IS_COMPLETE == set()


class DecliningLane:
    """A fast lane that records being asked and leaves every request to uvicorn."""

    def __init__(self) -> None:
        self.asked = False

    def fast(self, scope: dict) -> None:
        self.asked = True


@pytest.mark.parametrize("limit", [None, 1, 3])
def test_the_fast_lane_keeps_uvicorns_503_rule(limit: int | None) -> None:
    """The fast lane takes a request exactly when uvicorn would not answer it 503."""

    async def decide(connections: int, tasks: int) -> tuple[bool, bool]:
        proto, _ = protocol(limit_concurrency=limit)
        proto.connections.update(object() for _ in range(connections - 1))  # and itself
        proto.tasks.update(object() for _ in range(tasks))  # type: ignore[misc]
        lane = DecliningLane()
        proto._lane = lane  # type: ignore[assignment]
        chosen: list[Any] = []
        proto._start_asgi_task = lambda cycle, app: chosen.append(app)  # type: ignore[method-assign]
        proto.data_received(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        proto.connection_lost(None)
        return lane.asked, chosen == [service_unavailable]

    async def main() -> None:
        for connections in range(1, 5):
            for tasks in range(5):
                asked, refused = await decide(connections, tasks)
                assert asked != refused, (connections, tasks)

    asyncio.run(main())


def hot_path(max_header_bytes: int, header_timeout_ms: int) -> HotPath:
    """A HotPath as far as the protocol looks at one: its settings, and no fast lane."""
    app = HotPath.__new__(HotPath)
    settings = Settings.model_construct(
        max_header_bytes=max_header_bytes, header_timeout_ms=header_timeout_ms
    )
    app.state = SimpleNamespace(settings=settings)  # type: ignore[assignment]
    app.fast_lane = False
    return app


@pytest.mark.parametrize("proxy_headers", [False, True])
def test_the_header_limits_come_from_the_apps_settings(proxy_headers: bool) -> None:
    """Also when uvicorn wraps the app in a middleware (proxy_headers)."""

    def connect() -> tuple[BoundedHttpToolsProtocol, Transport]:
        app = hot_path(max_header_bytes=2048, header_timeout_ms=100)
        proto, transport = protocol(app, proxy_headers=proxy_headers)
        assert (proto.app is app) != proxy_headers
        return proto, transport

    async def main() -> None:
        proto, transport = connect()
        # httptools reports a header when the next one starts.
        proto.data_received(b"GET /x HTTP/1.1\r\nX-A: " + b"a" * 1500 + b"\r\nX-B: ")
        assert transport.written == b""  # under 2048: still reading
        proto.data_received(b"b" * 600 + b"\r\nX-C: ")
        assert transport.written.startswith(b"HTTP/1.1 431 ")
        assert b"request headers exceed 2048 bytes" in transport.written
        assert transport.closed

        proto, transport = connect()
        proto.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\n")
        while not transport.closed:  # the header deadline's timer ticks every 0.1 s
            await asyncio.sleep(0.05)
        assert transport.written.startswith(b"HTTP/1.1 408 ")
        assert b"request headers not complete within 0.1 s" in transport.written

    asyncio.run(asyncio.wait_for(main(), 30))


def test_outside_a_wasmlet_app_the_defaults_apply() -> None:
    async def main() -> None:
        proto, transport = protocol()
        default = Settings.model_fields["max_header_bytes"].default
        head = b"GET /x HTTP/1.1\r\nX-A: " + b"a" * (default - 100) + b"\r\nX-B: "
        proto.data_received(head)
        assert transport.written == b""
        proto.data_received(b"b" * 200 + b"\r\nX-C: ")
        assert transport.written.startswith(b"HTTP/1.1 431 ")
        proto.connection_lost(None)

    asyncio.run(main())
