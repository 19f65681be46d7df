"""The Extism plugin ABI: kernel, host functions and calling convention."""
