"""`wasi-cgi`: a WASI command run once per request, CGI/WAGI style.

The request body is the guest's stdin, request metadata its environment (CGI variables),
and its stdout a CGI response: header lines, a blank line, the body. A guest that prints
no header block answers with its whole stdout as the body. stderr becomes the invocation's
log. The guest gets nothing else: no files, no network, no args beyond its name, and no
environment beyond the CGI variables and the variables its spec grants.
"""

from __future__ import annotations

import os
import re
from typing import ClassVar

import wasmtime

from wasmlet.abi.base import Invocation, Outcome, WasiOnlyAbi
from wasmlet.errors import GuestError, InvalidRequest
from wasmlet.runtime.capture import BoundedBuffer
from wasmlet.runtime.module_info import ModuleInfo
from wasmlet.runtime.slot import Slot
from wasmlet.spec import FunctionSpec
from wasmlet.wasm import native

_HEADER_LIMIT = 64 * 1024
_TOKEN = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # header values allow tab, not these
_SKIPPED_HEADERS = {"content-type", "content-length", "authorization", "proxy-authorization"}


class WasiCgiAbi(WasiOnlyAbi):
    name: ClassVar[str] = "wasi-cgi"
    default_reuse: ClassVar[bool] = False
    allows_reuse: ClassVar[bool] = False  # a command's _start runs once per instance

    def default_export(self, info: ModuleInfo) -> str | None:
        return "_start"

    def check(self, info: ModuleInfo, spec: FunctionSpec) -> None:
        ty = info.func_exports.get(spec.export)
        if ty is None:
            raise InvalidRequest(
                f"module has no exported function {spec.export!r}; a wasi-cgi function is "
                "a WASI command exporting _start"
            )
        if list(ty.params) or list(ty.results):
            raise InvalidRequest(f"export {spec.export!r} must take and return nothing")
        if spec.reuse:
            raise InvalidRequest("wasi-cgi functions run a fresh instance per request")

    def configure_store(self, slot: Slot, inv: Invocation | None) -> None:
        assert inv is not None, "wasi-cgi instances are never pre-created"
        self.open_host(slot)
        pool = slot.function
        ctx = slot.ctx
        # A guest that goes on writing after a refused write (most libcs retry or ignore
        # the error) would cost a Python callback per chunk: stop it at its next epoch check.
        stdout = BoundedBuffer(
            pool.output_limit,
            fail_when_full=True,
            on_overflow=lambda: native.set_epoch_deadline(ctx, 0),
        )
        config = wasmtime.WasiConfig()
        config.argv = [pool.ref.name]
        config.env = cgi_environment(inv, pool.ref.name, pool.spec.env)
        config.stdout_custom = stdout.write
        config.stderr_custom = slot.logs.write
        # stdin must be a file for wasmtime; a memfd keeps the body off the disk.
        fd = os.memfd_create("wasmlet-stdin", os.MFD_CLOEXEC)
        try:
            os.write(fd, inv.body) if inv.body else None
            config.stdin_file = f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        slot.store.set_wasi(config)
        slot.abi_state = stdout

    def on_instance(self, slot: Slot) -> None:
        return None

    def call(self, slot: Slot, inv: Invocation) -> Outcome:
        stdout: BoundedBuffer = slot.abi_state
        start = slot.func(slot.function.spec.export)
        assert start is not None
        try:
            start()
        except wasmtime.Trap:
            if stdout.overflowed:  # stopped after its refused write (configure_store)
                raise GuestError(f"guest wrote more than {stdout.limit} bytes to stdout") from None
            raise
        except wasmtime.ExitTrap as exc:
            if stdout.overflowed:  # the refused write is why it gave up: say so
                raise GuestError(f"guest wrote more than {stdout.limit} bytes to stdout") from None
            if exc.code != 0:
                raise GuestError(
                    f"guest exited with status {exc.code}",
                    logs=slot.logs.getvalue().decode("utf-8", "replace"),
                ) from None
        if stdout.overflowed:
            raise GuestError(f"guest wrote more than {stdout.limit} bytes to stdout")
        return parse_cgi_response(stdout.getvalue())


def cgi_environment(inv: Invocation, name: str, granted: dict[str, str]) -> list[tuple[str, str]]:
    env = dict(granted)
    env.update(
        {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_SOFTWARE": "wasmlet",
            "SERVER_NAME": inv.server_name,
            "SERVER_PORT": str(inv.server_port),
            "REQUEST_METHOD": inv.method,
            "SCRIPT_NAME": f"/fn/{name}" if inv.script_name is None else inv.script_name,
            "PATH_INFO": inv.path,
            "QUERY_STRING": inv.query,
            "REMOTE_ADDR": inv.remote_addr,
            "CONTENT_LENGTH": str(len(inv.body)),
            "CONTENT_TYPE": inv.header(b"content-type") or "",
            "X_MATCHED_ROUTE": (
                f"/fn/{name}/..." if inv.script_name is None else f"{inv.script_name}/..."
            ),
        }
    )
    request_vars: set[str] = set()
    for raw_key, raw_value in inv.headers:
        key = raw_key.decode("latin-1")
        if key not in _SKIPPED_HEADERS:
            name = "HTTP_" + key.upper().replace("-", "_")
            value = raw_value.decode("latin-1")
            # RFC 3875 4.1.18: repeated header fields are combined into one, comma-separated.
            env[name] = f"{env[name]}, {value}" if name in request_vars else value
            request_vars.add(name)
    return list(env.items())


_OCTET = (b"content-type", b"application/octet-stream")


def parse_cgi_response(out: bytes) -> Outcome:
    """Split a CGI response into status, headers and body.

    A header block is recognised only if every line before the first blank line looks like
    `Name: value` with a token name; otherwise the whole output is the body.
    """
    # The earliest blank line ends the header block, whichever line ending it uses.
    found = [
        (i, sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := out.find(sep, 0, _HEADER_LIMIT)) >= 0
    ]
    if not found:
        return Outcome(200, [_OCTET], out)
    idx, sep = min(found)
    head, body = out[:idx], out[idx + len(sep) :]
    headers: list[tuple[bytes, bytes]] = []
    status = 200
    for raw_line in head.split(b"\n"):
        name, colon, value = raw_line.rstrip(b"\r").partition(b":")
        name = name.strip()
        if not colon or not _TOKEN.fullmatch(name):
            return Outcome(200, [_OCTET], out)
        value = value.strip()
        lname = name.lower()
        if lname == b"status":
            code = value.split(b" ", 1)[0]
            if not code.isdigit() or not 100 <= int(code) <= 599:
                raise GuestError(f"guest sent an invalid CGI Status header: {value!r}")
            status = int(code)
        else:
            if _CONTROL.search(value):  # would break the response framing on the wire
                raise GuestError(f"guest sent a control character in header {name.decode()!r}")
            headers.append((lname, value))
    if status == 200 and any(k == b"location" for k, _ in headers):
        status = 302  # CGI: a Location without Status is a redirect
    if not any(k == b"content-type" for k, _ in headers):
        headers.append(_OCTET)
    return Outcome(status, headers, body)
