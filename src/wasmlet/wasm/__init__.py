"""The one place wasmlet reaches below wasmtime-py's public API.

The hot paths (calling an export, making a store and an instance per request, reading a
memory's size) are too slow through wasmtime-py's wrappers, so they go to the C API and to
wasmtime-py's private attributes directly. All of that lives here, behind a small typed
surface, so a wasmtime-py upgrade is checked in one package (the dependency is pinned
exactly). Nothing outside `wasmlet.wasm` imports `wasmtime._*` or touches a private
attribute of a wasmtime object; tests/test_layers.py enforces it.

- `native`: C functions bound directly (GIL kept), raw store and instance creation, the
  pooling allocator, and the conversions between wasmtime-py objects and raw C handles.
- `fastcall`: calling exported functions with a preallocated raw value array.
"""
