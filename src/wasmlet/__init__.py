"""wasmlet: a self-hosted Functions-as-a-Service platform for WebAssembly."""

__version__ = "0.1.0"
