"""Peer servers that wasmlet's invoke path is measured against.

Each answers `POST /api/v1/functions/{name}/invoke` with the bytes wasmlet returns for
`gcd(1071, 462)`: `{"result": 21}` as application/json, after reading the whole body.
They run on the same uvicorn settings as src/wasmlet/server.py, so the difference between
wasmlet and a peer is what wasmlet does per request, not the HTTP stack:

    bare-starlette    a Starlette route returning constant bytes: the framework's floor
    bare-asgi         a raw ASGI callable returning constant bytes: uvicorn's floor
    wasmtime-direct   a Starlette route calling gcd on ONE shared wasmtime instance, parsing
                      the JSON args. The naive design: no isolation between requests (state
                      left in linear memory by one request is seen by the next), no deadline,
                      no memory cap. It only stays crash-free because the call runs on the
                      event loop thread, so calls never overlap; moved to threads to run
                      guests in parallel it would share one Store between threads.
    extism-mutex      a Starlette route calling ONE Extism Python SDK plugin (`--plugin`,
                      `--export`) with the raw request body as input, under a lock, directly
                      on the event loop (no thread hop): the simplest way to serve an Extism
                      plugin from Python. Used by bench/extism_bench.py.

bare-starlette and bare-asgi answer the bytes of `--body-file` instead of the gcd answer
when given one.

Usage: python bench/peers.py bare-starlette --port 8001 [--workers 2] [--busy-us 150]
       python bench/peers.py extism-mutex --port 8001 --plugin hello.wasm --export hello
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn

GCD_BODY = b'{"result": 21}'
JSON_HEADERS = [(b"content-type", b"application/json")]
INVOKE_PATH = "/api/v1/functions/{name}/invoke"
GCD_WAT = Path(__file__).resolve().parents[1] / "examples" / "gcd" / "gcd.wat"


# -- bare-starlette --------------------------------------------------------------------------


def bare_starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    busy_s = float(os.environ.get("BENCH_PEER_BUSY_US", "0")) / 1e6
    body_file = os.environ.get("BENCH_PEER_BODY_FILE")
    answer = Path(body_file).read_bytes() if body_file else GCD_BODY

    async def invoke(request: Request) -> Response:
        await request.body()
        if busy_s:  # --busy-us: burn CPU like a server doing that much work per request
            end = time.perf_counter() + busy_s
            while time.perf_counter() < end:
                pass
        return Response(answer, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route(INVOKE_PATH, invoke, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


# -- bare-asgi -------------------------------------------------------------------------------


def bare_asgi() -> Any:
    body_file = os.environ.get("BENCH_PEER_BODY_FILE")
    answer = Path(body_file).read_bytes() if body_file else GCD_BODY

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        while True:  # read the whole body, as the other servers do
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                break
        if scope["path"] == "/healthz":
            status, body = 200, b'{"status": "ok"}'
        elif scope["method"] == "POST" and scope["path"].endswith("/invoke"):
            status, body = 200, answer
        else:
            status, body = 404, b'{"error": "not found"}'
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


# -- wasmtime-direct -------------------------------------------------------------------------


def wasmtime_direct() -> Any:
    import wasmtime
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, wasmtime.wat2wasm(GCD_WAT.read_text()))
    instance = wasmtime.Instance(store, module, [])  # the one instance every request shares
    gcd = instance.exports(store)["gcd"]

    async def invoke(request: Request) -> Response:
        args = json.loads(await request.body())["args"]
        result = gcd(store, int(args[0]), int(args[1]))
        return Response(json.dumps({"result": result}).encode(), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route(INVOKE_PATH, invoke, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


# -- extism-mutex ----------------------------------------------------------------------------


def extism_mutex() -> Any:
    import threading

    import extism
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    path = Path(os.environ["BENCH_EXTISM_PLUGIN"])
    export = os.environ["BENCH_EXTISM_EXPORT"]
    wasi = os.environ.get("BENCH_EXTISM_WASI") == "1"
    data = path.read_bytes()
    if path.suffix == ".wat":
        import wasmtime

        data = bytes(wasmtime.wat2wasm(data.decode()))
    plugin = extism.Plugin(data, wasi=wasi)  # the one plugin instance every request shares
    # Calls run on the event loop thread, so they never overlap and the lock is never
    # contended; it is what keeps the plugin safe if the call is ever moved to a thread.
    lock = threading.Lock()

    async def invoke(request: Request) -> Response:
        body = await request.body()
        try:
            with lock:
                out = plugin.call(export, body)
        except extism.Error as exc:
            return JSONResponse({"error": str(exc)}, status_code=500)
        return Response(out, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route(INVOKE_PATH, invoke, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


PEERS = {
    "bare-starlette": "bare_starlette",
    "bare-asgi": "bare_asgi",
    "wasmtime-direct": "wasmtime_direct",
    "extism-mutex": "extism_mutex",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--busy-us",
        type=float,
        default=0,
        help="bare-starlette only: spin this many microseconds of CPU per request, to tell "
        "what any server with that much per-request work does under the same load",
    )
    parser.add_argument(
        "--body-file", type=Path, help="bare-starlette, bare-asgi: answer these bytes instead"
    )
    parser.add_argument("--plugin", type=Path, help="extism-mutex: the plugin (.wasm or .wat)")
    parser.add_argument("--export", help="extism-mutex: the function to call")
    parser.add_argument("--wasi", action="store_true", help="extism-mutex: enable WASI")
    args = parser.parse_args(argv)
    if args.peer == "extism-mutex" and (args.plugin is None or args.export is None):
        parser.error("extism-mutex needs --plugin and --export")
    # Read by every worker's factory (uvicorn builds the app in each worker process).
    os.environ["BENCH_PEER_BUSY_US"] = str(args.busy_us)
    if args.body_file is not None:
        os.environ["BENCH_PEER_BODY_FILE"] = str(args.body_file.resolve())
    if args.plugin is not None:
        os.environ["BENCH_EXTISM_PLUGIN"] = str(args.plugin.resolve())
        os.environ["BENCH_EXTISM_EXPORT"] = args.export
        os.environ["BENCH_EXTISM_WASI"] = "1" if args.wasi else "0"
    print(f"peer {args.peer} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    # The same settings as src/wasmlet/server.py. An import string (not an app object) so
    # that uvicorn can start several worker processes; each builds its own app.
    uvicorn.run(
        f"peers:{PEERS[args.peer]}",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        timeout_keep_alive=30,
        limit_concurrency=10_000,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
