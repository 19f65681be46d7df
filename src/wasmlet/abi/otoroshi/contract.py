"""The Otoroshi Wasm-backend contract (EXTISM-ABI.md §6): the JSON context a plugin gets and
the JSON answer it gives, plus the body and base64 rules that `proxy_http_call` shares.

The context mirrors what Otoroshi sends its WasmBackend, filled from what wasmlet knows of
the request: there is no gateway route, backend, API key or user here, so those are null
(`route` names the function). Paths are the function's own (after `/fn/{name}` or a
route's stripped prefix), percent-encoded as they travel on the wire.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qs, quote

from wasmlet.abi.base import Invocation, Outcome

_JSON_HEADERS = [(b"content-type", b"application/json")]
# Headers a plugin may not set. The server computes Content-Length from the body and owns
# the connection, so a plugin's framing or hop-by-hop headers would contradict the response
# actually sent (or break it): they are dropped, as a proxy drops them.
_DROPPED = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)
_NO_BODY = frozenset({204, 304})
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Characters left as they are when a decoded path is put back into a URL.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class ContractError(ValueError):
    """The plugin's JSON breaks the contract; the message says how."""


# -- request ids ----------------------------------------------------------------------------

_sequence = itertools.count()
_sequence_lock = threading.Lock()


def request_id() -> int:
    """A snowflake-style id (milliseconds since the epoch, then a 22-bit sequence number):
    unique within the process, increasing, and a positive 63-bit integer as Otoroshi's."""
    with _sequence_lock:
        n = next(_sequence)
    return (int(time.time() * 1000) << 22) | (n & 0x3FFFFF)


# -- base64 and bytes -----------------------------------------------------------------------


def b64decode(text: str) -> bytes:
    """Standard-alphabet base64, padded or not (the Otoroshi helpers send it unpadded)."""
    text = text.strip()
    if not _B64_ALPHABET.fullmatch(text):
        raise ContractError("not standard base64 (characters outside A-Z a-z 0-9 + /)")
    bare = text.rstrip("=")
    if len(bare) % 4 == 1:
        raise ContractError("not valid base64 (truncated)")
    try:
        return base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except binascii.Error as exc:
        raise ContractError(f"not valid base64 ({exc})") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# Each byte value as the JSON text of a JVM (signed) byte.
_SIGNED_TEXT = tuple(str(b - 256 if b > 127 else b) for b in range(256))


def signed_json(data: bytes) -> bytes:
    """Bytes as a JSON array of JVM bytes (-128..127), built as text: the request body
    can be megabytes, and a list of ints through json.dumps costs several times more."""
    return b"[" + ",".join(map(_SIGNED_TEXT.__getitem__, data)).encode("ascii") + b"]"


def from_signed(values: list[Any], field: str) -> bytes:
    out = bytearray()
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not -128 <= v <= 127:
            raise ContractError(f"{field} holds {v!r}; bytes are integers from -128 to 127")
        out.append(v & 0xFF)
    return bytes(out)


def body_of(obj: dict[str, Any]) -> bytes:
    """The body an answer (or an outbound request) describes: the first usable of
    `body_str`/`body` (non-blank text), `body_json` (any non-null JSON, serialised),
    `body_base64` (non-blank), `body_bytes` (non-empty array of signed bytes); else empty."""
    for key in ("body_str", "body"):
        text = obj.get(key)
        if isinstance(text, str) and text.strip():
            return text.encode("utf-8")
    if obj.get("body_json") is not None:
        return compact(obj["body_json"])
    text = obj.get("body_base64")
    if isinstance(text, str) and text.strip():
        try:
            return b64decode(text)
        except ContractError as exc:
            raise ContractError(f"body_base64 is {exc}") from None
    values = obj.get("body_bytes")
    if isinstance(values, list) and values:
        return from_signed(values, "body_bytes")
    return b""


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- the context JSON -------------------------------------------------------------------------


def _headers(inv: Invocation) -> dict[str, str]:
    """Request headers as one string each (repeated ones joined as HTTP allows)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in inv.headers:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name in out:
            out[name] += ("; " if name == "cookie" else ", ") + value
        else:
            out[name] = value
    return out


def _cookies(header: str | None) -> list[tuple[str, str]]:
    pairs = []
    for part in (header or "").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name:
            pairs.append((name.strip(), value.strip()))
    return pairs


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def context_json(inv: Invocation, function: str, config: dict[str, str], request_id: int) -> bytes:
    """The UTF-8 JSON context of EXTISM-ABI.md §6 for one invocation (compact, keys in the
    documented order; the body array is spliced in as text, see `signed_json`)."""
    headers = _headers(inv)
    path = quote(inv.path or "/", safe=_PATH_SAFE)
    uri = path + ("?" + inv.query if inv.query else "")
    host = inv.server_name or "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    port = "" if inv.server_port == _default_port(inv.scheme) else f":{inv.server_port}"
    query = parse_qs(inv.query, keep_blank_values=True)
    cookies = _cookies(headers.get("cookie"))
    tls = inv.scheme == "https"
    head = {
        "snowflake": str(request_id),
        "request": {
            "url": f"{inv.scheme}://{host}{port}{uri}",
            "method": inv.method,
            "headers": headers,
            "query": query,
            "version": "HTTP/1.1",
            "client_cert_chain": None,
            "backend": None,
            "cookies": [
                {
                    "name": name,
                    "value": value,
                    "domain": None,
                    "path": "/",
                    "maxAge": None,
                    "secure": tls,
                    "httpOnly": False,
                }
                for name, value in cookies
            ],
        },
        "raw_request": {
            "id": request_id,
            "method": inv.method,
            "headers": headers,
            "cookies": [
                {
                    "name": name,
                    "value": value,
                    "path": "/",
                    "domain": None,
                    "http_only": False,
                    "max_age": None,
                    "secure": tls,
                    "same_site": None,
                }
                for name, value in cookies
            ],
            "tls": tls,
            "uri": uri,
            "query": query,
            "path": path,
            "version": "HTTP/1.1",
            "has_body": bool(inv.body),
            "remote": inv.remote_addr,
            "client_cert_chain": None,
            "path_params": {},
        },
    }
    tail = {
        "backend": None,
        "route": {"id": function, "name": function},
        "apikey": None,
        "user": None,
        "config": dict(config),
        "global_config": {},
        "attrs": {},
    }
    body = signed_json(inv.body) if inv.body else b"null"
    return compact(head)[:-1] + b',"request_body_bytes":' + body + b"," + compact(tail)[1:]


# -- the answer -------------------------------------------------------------------------------


def parse_answer(output: bytes) -> dict[str, Any]:
    """The plugin's answer; anything that is not a JSON object counts as `{}`."""
    try:
        answer = json.loads(output)
    except ValueError:  # includes invalid UTF-8
        return {}
    return answer if isinstance(answer, dict) else {}


def _status(answer: dict[str, Any]) -> int:
    value = answer.get("status")
    if value is None:
        return 200
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"status must be an integer, got {value!r}")
    # 1xx are interim responses: answering one as the final response would leave the
    # client waiting for the real one, so only 200-599 can end a request.
    if not 200 <= value <= 599:
        raise ContractError(f"status {value} is not a final HTTP status (200-599)")
    return value


def _answer_headers(answer: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    headers = answer.get("headers")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return list(_JSON_HEADERS)
    out = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ContractError(f"invalid header name {name!r}")
        if name.lower() in _DROPPED:
            continue
        value = value.strip(" \t")
        if _BAD_VALUE.search(value):
            raise ContractError(f"header {name!r} has a control character in its value")
        out.append((name.lower().encode("ascii"), value.encode("utf-8")))
    return out


def outcome_of(output: bytes) -> Outcome:
    """The HTTP answer a plugin's output describes; ContractError when it cannot be sent."""
    answer = parse_answer(output)
    status = _status(answer)
    headers = _answer_headers(answer)
    body = body_of(answer)
    if status in _NO_BODY:
        # These responses end at their headers: bytes sent after them would be read as
        # the start of the next response on the connection.
        body = b""
    return Outcome(status, headers, body)
