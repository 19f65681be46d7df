"""The HTTP surface: management, invoke, gateway, WasmEngine compat, system routes."""
