"""The Otoroshi Wasm-backend contract: an Extism plugin answering JSON-described requests."""
