"""Host-side cost of moving 100 KiB through wasmlet's Extism kernel (no plugin code timed).

    set_input   Kernel.set_input(data): reset the kernel, copy 100 KiB in as the input block
    output      Kernel.output(): read back the 100 KiB output block a plugin set

The output block is set once by bench/plugins/echo_upper.wat (`upper`), then read `--n`
times; extism_bench.py times whole calls (these two steps included), this isolates them.
Moved here from tests/abi/test_extism_kernel.py, where it only printed its figures.

Usage: python bench/extism_kernel.py [--n 500]   (one JSON line on stdout, nothing written)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import wasmtime

from wasmlet.abi.extism.kernel import Kernel

PLUGIN = Path(__file__).resolve().parent / "plugins" / "echo_upper.wat"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="repetitions of each step")
    n = parser.parse_args().n

    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    kernel = Kernel.instantiate(store)
    module = wasmtime.Module(engine, PLUGIN.read_text())
    imports = [kernel.exports[imp.name] for imp in module.imports]
    upper = wasmtime.Instance(store, module, imports).exports(store)["upper"]

    data = bytes(range(256)) * 400  # 100 KiB
    start = time.perf_counter()
    for _ in range(n):
        kernel.set_input(data)
    set_input = (time.perf_counter() - start) / n
    assert upper(store) == 0
    start = time.perf_counter()
    for _ in range(n):
        out = kernel.output()
    output = (time.perf_counter() - start) / n
    assert out == data.upper(), "the plugin's output is not the upper-cased input"
    print(
        json.dumps(
            {"bytes": len(data), "n": n, "set_input_us": set_input * 1e6, "output_us": output * 1e6}
        )
    )


if __name__ == "__main__":
    main()
