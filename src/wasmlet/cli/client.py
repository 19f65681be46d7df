"""A thin typed wrapper over the wasmlet HTTP API, used by the client commands.

Every method returns the server's parsed JSON, or raises `ApiError` carrying the stable
error code and message the server sent (`{"error": {"code", "message"}}`), or
`Unreachable` when nothing answers at the URL. No state is cached between calls.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
_API = "/api/v1/functions"
# Uploads and invocations may legitimately take a while (compilation, slow guests);
# only connecting should fail fast.
_TIMEOUT = httpx.Timeout(300.0, connect=5.0, pool=5.0)
_UPLOAD_CHUNK = 64 * 1024

Progress = Callable[[int, int], None]  # (bytes sent so far, total bytes)


def find_api_key() -> str | None:
    """`$WASMLET_API_KEY`, else the admin key the server wrote on first start into
    `<data dir>/admin.key` (data dir: `$WASMLET_DATA_DIR`, default `./.wasmlet`)."""
    explicit = os.environ.get("WASMLET_API_KEY")
    if explicit:
        return explicit.strip()
    path = Path(os.environ.get("WASMLET_DATA_DIR", ".wasmlet")) / "admin.key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class ClientError(Exception):
    """Anything that kept a request from getting a usable answer."""


class Unreachable(ClientError):
    def __init__(self, url: str, reason: str = "") -> None:
        super().__init__(f"cannot reach wasmlet at {url}")
        self.url = url
        self.reason = reason


class ApiError(ClientError):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Deployed:
    function: dict[str, Any]
    created: bool  # 201: a new version; 200: these bytes and spec were already deployed


@dataclass
class InvokeResult:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def error_of(response: httpx.Response) -> ApiError:
    """The server's error, or a synthetic one when the body is not the error shape."""
    detail = _error_body(response)
    if detail is not None:
        return ApiError(detail[0], detail[1], response.status_code)
    text = response.text.strip().splitlines()
    message = text[0][:200] if text else response.reason_phrase
    return ApiError(f"http_{response.status_code}", message, response.status_code)


def _error_body(response: httpx.Response) -> tuple[str, str] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        return err["code"], str(err.get("message", ""))
    return None


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._http = httpx.Client(
            base_url=self.url, timeout=_TIMEOUT, transport=transport, headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- management ------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        filename: str,
        module: bytes,
        fields: Sequence[tuple[str, str]] = (),
        progress: Progress | None = None,
        extras: dict[str, bytes] | None = None,
    ) -> Deployed:
        """Upload a module; `fields` are extra form fields, repeated keys allowed; `extras`
        are further modules linked by name (extism)."""
        data: dict[str, str | list[str]] = {"name": name}
        for key, value in fields:
            current = data.setdefault(key, [])
            if isinstance(current, list):
                current.append(value)
        files = [("file", (filename, module, "application/octet-stream"))]
        for extra_name, extra in (extras or {}).items():
            files.append(("module", (f"{extra_name}.wasm", extra, "application/octet-stream")))
            current = data.setdefault("module_name", [])
            if isinstance(current, list):
                current.append(extra_name)
        request = self._http.build_request("POST", _API, data=data, files=files)
        # Re-stream the encoded multipart body in small chunks so the caller can show
        # upload progress; the explicit Content-Length keeps the request un-chunked.
        stream = request.stream
        assert isinstance(stream, httpx.SyncByteStream)  # built by a sync client
        body = b"".join(stream)
        headers = {
            "content-type": request.headers["content-type"],
            "content-length": str(len(body)),
        }
        response = self._send("POST", _API, content=_chunks(body, progress), headers=headers)
        return Deployed(self._json(response), created=response.status_code == 201)

    def list(self) -> list[dict[str, Any]]:
        return self._json(self._send("GET", _API))["functions"]

    def get(self, name: str) -> dict[str, Any]:
        return self._json(self._send("GET", f"{_API}/{_seg(name)}"))

    # `list` below names the method above, hence builtins.list.
    def versions(self, name: str) -> builtins.list[dict[str, Any]]:
        return self._json(self._send("GET", f"{_API}/{_seg(name)}/versions"))["versions"]

    def rollback(self, name: str, digest: str) -> dict[str, Any]:
        path = f"{_API}/{_seg(name)}/rollback"
        return self._json(self._send("POST", path, json={"digest": digest}))

    def delete(self, name: str) -> dict[str, Any]:
        return self._json(self._send("DELETE", f"{_API}/{_seg(name)}"))

    def invocations(self, name: str, limit: int = 50) -> builtins.list[dict[str, Any]]:
        path = f"{_API}/{_seg(name)}/invocations"
        return self._json(self._send("GET", path, params={"limit": limit}))["invocations"]

    # -- invocation ------------------------------------------------------------------------

    def invoke(
        self,
        name: str,
        body: bytes = b"",
        *,
        export: str | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        path: str | None = None,
        method: str | None = None,
    ) -> InvokeResult:
        """Invoke through the API, or through the gateway (`/fn/NAME/...`) when a path or
        method is given. A platform error (the JSON error shape with a 4xx/5xx status)
        raises `ApiError`; any other answer, whatever its status, comes back as is, since
        a guest may choose its own status and body."""
        params: dict[str, str] = {}
        if path is None and method is None:
            url = f"{_API}/{_seg(name)}/invoke"
            if export:
                url += f"/{_seg(export)}"
            verb = "POST"
        else:
            sub, _, query = (path or "/").lstrip("/").partition("?")
            url = f"/fn/{_seg(name)}/{sub}"
            if query:
                url += f"?{query}"
            if export:
                params["export"] = export
            verb = (method or "POST").upper()
        response = self._send(verb, url, content=body, headers=headers, params=params or None)
        if response.status_code >= 400 and _error_body(response) is not None:
            raise error_of(response)
        return InvokeResult(response.status_code, list(response.headers.items()), response.content)

    # -- plumbing --------------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any management endpoint: its parsed JSON, or ApiError. `path` starts with /api/.
        Used by the command groups of the capability APIs (kv, routes, secrets)."""
        return self._json(self._send(method, path, **kwargs))

    def call_raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Like call(), for endpoints whose success body is not JSON (raw values)."""
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(self.url, str(exc)) from None
        except httpx.TransportError as exc:
            # The server went away mid-request, or answered with something that is not HTTP.
            raise ClientError(
                f"request to {self.url} failed: {exc or type(exc).__name__}"
            ) from None

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_of(response)
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                "bad_response",
                "the server answered with something that is not JSON",
                response.status_code,
            ) from None


def _seg(value: str) -> str:
    """One path segment, percent-encoded so a name can never change the route."""
    return quote(value, safe="")


def _chunks(body: bytes, progress: Progress | None) -> Iterator[bytes]:
    total = len(body)
    if progress:
        progress(0, total)
    for start in range(0, total, _UPLOAD_CHUNK):
        chunk = body[start : start + _UPLOAD_CHUNK]
        yield chunk
        if progress:
            progress(start + len(chunk), total)
