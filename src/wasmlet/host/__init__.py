"""Host capabilities: what a guest may import, each granted per function, denied by default.

One module per capability (kv, http, secrets, logs, calls, clock). Each operation is
written once, in Python, over plain bytes and integers (host/catalog.py lists them); the
bindings in host/binding.py offer the same operations to every ABI that can import them:
Extism plugins through `extism:host/user` (kernel handles), core and WASI modules through
the `wasmlet` import namespace (pointer and length in the guest's own memory), and
Otoroshi plugins through their `env` functions (abi/otoroshi).
"""
