"""Compiling, pooling and running guest code on one wasmtime Engine per process."""
