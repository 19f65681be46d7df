#!/usr/bin/env python3
"""Build the wasmlet example guests.

Every sub-folder of examples/ holds one example: a ``<folder>.wat`` or
``<folder>.c``, or else the folder's only ``.wat``/``.c`` file. WAT is converted
with ``wasmtime.wat2wasm`` (name section kept). C is compiled with Zig from PyPI
(``python -m ziglang cc``): as a WASI command by default, or, when
manifest.json deploys the output with ``"abi": "extism"`` or ``"abi": "otoroshi"``,
as an Extism plugin (a reactor without WASI imports, built against the PDK headers in
``pdk/``; Otoroshi plugins may also import Otoroshi's ``proxy_*`` functions from ``env``).
The output is written next to the source as ``<folder>/<source name>.wasm``.

Usage (with the project venv's python, which has wasmtime and ziglang)::

    python examples/build.py            # build all examples
    python examples/build.py echo gcd   # build only these folders
    python examples/build.py --check    # rebuild into a temp dir, verify the
                                        # committed .wasm files

Outputs are rewritten only when their bytes change, so running the script
twice is harmless. Exit status is non-zero if anything fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
PDK_DIR = EXAMPLES_DIR / "pdk"
MANIFEST = EXAMPLES_DIR / "manifest.json"

# Flags for C guests: a WASI command (exports `_start`), optimised for size,
# stripped, with a 64 KiB stack instead of Zig's default 16 MiB so that the
# module's initial linear memory stays at a few pages.
C_FLAGS = [
    "--target=wasm32-wasi",
    "-Os",
    "-s",
    "-Wl,-z,stack-size=65536",
]

# Flags for Extism plugins in C: a reactor (no `main`; exports `_initialize` and the
# functions marked with export_name) that includes examples/pdk/wasmlet_extism.h. As long
# as a plugin uses nothing from libc that needs the OS (malloc and <string.h> are fine), it
# has no WASI imports and runs without the function's `wasi` grant.
EXTISM_C_FLAGS = [
    "--target=wasm32-wasi",
    "-mexec-model=reactor",
    "-Os",
    "-s",
    "-Wl,-z,stack-size=65536",
    f"-I{PDK_DIR}",
]

# Import namespaces an Extism example may use: the host ABI only, never WASI.
EXTISM_NAMESPACES = ("extism:host/env", "extism:host/user")
# An Otoroshi plugin may also import Otoroshi's host functions (env.proxy_*).
OTOROSHI_NAMESPACES = (*EXTISM_NAMESPACES, "env.proxy_")
# manifest.json ABIs whose C sources are built as Extism plugins -> allowed imports.
PLUGIN_ABIS = {"extism": EXTISM_NAMESPACES, "otoroshi": OTOROSHI_NAMESPACES}

# Initial memory above this many 64 KiB pages is reported as a failure in
# --check (it would mean the stack-size flag got lost).
MAX_INITIAL_PAGES = 16


class BuildError(Exception):
    pass


@dataclass
class Example:
    name: str  # folder name
    source: Path  # <folder>/<file>.wat or <folder>/<file>.c
    kind: str  # "wat", "c" (WASI command) or "extism-c" (Extism or Otoroshi plugin)
    export: str | None = None  # for plugins: the export manifest.json names
    namespaces: tuple[str, ...] = EXTISM_NAMESPACES  # for plugins: allowed import prefixes

    @property
    def output(self) -> Path:
        return self.source.with_suffix(".wasm")


def manifest_entries() -> dict[str, dict]:
    """manifest.json entries by the file they deploy (relative to examples/)."""
    try:
        items = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot read {MANIFEST.name}: {exc}") from exc
    return {item["file"]: item for item in items if isinstance(item, dict) and "file" in item}


def find_source(folder: Path) -> Path | None:
    for kind in ("wat", "c"):
        src = folder / f"{folder.name}.{kind}"
        if src.is_file():
            return src
    sources = sorted(p for p in folder.iterdir() if p.suffix in (".wat", ".c") and p.is_file())
    if len(sources) > 1:
        names = ", ".join(p.name for p in sources)
        raise BuildError(f"{folder.name}/ has several sources ({names}); name one {folder.name}.*")
    return sources[0] if sources else None


def discover() -> list[Example]:
    entries = manifest_entries()
    found = []
    for folder in sorted(p for p in EXAMPLES_DIR.iterdir() if p.is_dir()):
        if folder.name.startswith((".", "_")):
            continue
        src = find_source(folder)
        if src is None:
            continue  # e.g. pdk/: headers only
        kind = src.suffix.lstrip(".")
        entry = entries.get(f"{folder.name}/{src.stem}.wasm", {})
        abi = entry.get("abi")
        if kind == "c" and abi in PLUGIN_ABIS:
            found.append(
                Example(folder.name, src, "extism-c", entry.get("export"), PLUGIN_ABIS[abi])
            )
        else:
            found.append(Example(folder.name, src, kind))
    return found


def _wasmtime():
    try:
        import wasmtime
    except ImportError as exc:  # pragma: no cover - environment problem
        raise BuildError(f"wasmtime is not importable with {sys.executable}: {exc}") from exc
    return wasmtime


def build_wat(src: Path) -> bytes:
    wasmtime = _wasmtime()
    try:
        return bytes(wasmtime.wat2wasm(src.read_text(encoding="utf-8")))
    except wasmtime.WasmtimeError as exc:
        raise BuildError(f"wat2wasm failed: {exc}") from exc


def build_c(src: Path, workdir: Path, flags: list[str] = C_FLAGS) -> bytes:
    out = workdir / (src.stem + ".wasm")
    cmd = [sys.executable, "-m", "ziglang", "cc", *flags, "-o", str(out), str(src)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise BuildError(f"cannot run zig: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        if "No module named ziglang" in detail:
            detail += "\n(install it with: pip install ziglang)"
        raise BuildError(f"zig cc failed (exit {proc.returncode}):\n{detail}")
    return out.read_bytes()


def build_one(ex: Example, workdir: Path) -> bytes:
    if ex.kind == "wat":
        return build_wat(ex.source)
    if ex.kind == "extism-c":
        return build_c(ex.source, workdir, EXTISM_C_FLAGS)
    return build_c(ex.source, workdir)


def inspect(data: bytes) -> dict:
    """Validate a module and describe it: exports, imports, initial memory pages."""
    wasmtime = _wasmtime()
    engine = wasmtime.Engine()
    try:
        wasmtime.Module.validate(engine, data)
        module = wasmtime.Module(engine, data)
    except wasmtime.WasmtimeError as exc:
        raise BuildError(f"invalid module: {exc}") from exc
    exports = {}
    pages = None
    for exp in module.exports:
        exports[exp.name] = exp.type
        if isinstance(exp.type, wasmtime.MemoryType) and exp.name == "memory":
            pages = exp.type.limits.min
    imports = [f"{imp.module}.{imp.name}" for imp in module.imports]
    return {"exports": exports, "imports": imports, "pages": pages}


def describe(info: dict) -> str:
    pages = info["pages"]
    mem = f"{pages} page(s)" if pages is not None else "no exported memory"
    return f"{mem}, {len(info['imports'])} import(s), exports: {', '.join(info['exports'])}"


def check_c_module(info: dict) -> None:
    if "_start" not in info["exports"]:
        raise BuildError("WASI command does not export _start")
    if "memory" not in info["exports"]:
        raise BuildError("module does not export memory")
    bad = [i for i in info["imports"] if not i.startswith("wasi_snapshot_preview1.")]
    if bad:
        raise BuildError(f"unexpected non-WASI imports: {', '.join(bad)}")
    check_pages(info)


def check_extism_module(
    info: dict, export: str | None, namespaces: tuple[str, ...] = EXTISM_NAMESPACES
) -> None:
    if "_start" in info["exports"]:
        raise BuildError("Extism plugin exports _start: was -mexec-model=reactor dropped?")
    if "memory" not in info["exports"]:
        raise BuildError("module does not export memory")
    if export and export not in info["exports"]:
        raise BuildError(f"plugin does not export {export!r} (the export manifest.json names)")
    bad = [i for i in info["imports"] if not i.startswith(namespaces)]
    if bad:
        raise BuildError(
            f"unexpected imports (a plugin without WASI needs no grant): {', '.join(bad)}"
        )
    check_pages(info)


def check_pages(info: dict) -> None:
    if info["pages"] is not None and info["pages"] > MAX_INITIAL_PAGES:
        raise BuildError(
            f"initial memory is {info['pages']} pages (> {MAX_INITIAL_PAGES}); "
            "was -Wl,-z,stack-size dropped?"
        )


def check_module(ex: Example, info: dict) -> None:
    if ex.kind == "c":
        check_c_module(info)
    elif ex.kind == "extism-c":
        check_extism_module(info, ex.export, ex.namespaces)


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(EXAMPLES_DIR.parent))
    except ValueError:
        return str(path)


def cmd_build(examples: list[Example]) -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="wasmlet-build-") as tmp:
        for ex in examples:
            try:
                data = build_one(ex, Path(tmp))
                info = inspect(data)
                check_module(ex, info)
            except BuildError as exc:
                print(f"FAIL  {rel(ex.source)}: {exc}", file=sys.stderr)
                failures += 1
                continue
            out = ex.output
            if out.is_file() and out.read_bytes() == data:
                state = "unchanged"
            else:
                tmp_out = out.with_suffix(".wasm.tmp")
                tmp_out.write_bytes(data)
                os.replace(tmp_out, out)
                state = "built"
            print(f"{state:9} {rel(out)} ({len(data)} bytes; {describe(info)})")
    return 1 if failures else 0


def cmd_check(examples: list[Example]) -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="wasmlet-check-") as tmp:
        for ex in examples:
            out = ex.output
            try:
                fresh = build_one(ex, Path(tmp))
                fresh_info = inspect(fresh)
                if not out.is_file():
                    raise BuildError(f"{rel(out)} is missing; run examples/build.py")
                committed = out.read_bytes()
                try:
                    info = inspect(committed)
                except BuildError as exc:
                    raise BuildError(f"{rel(out)}: {exc}") from exc
                if ex.kind == "wat":
                    # wat2wasm is deterministic: the committed file must match.
                    if committed != fresh:
                        raise BuildError(f"{rel(out)} is stale; run examples/build.py")
                else:
                    # Compiler output may differ between zig versions; require a
                    # valid module of the same kind with the same export names instead.
                    check_module(ex, info)
                    if set(info["exports"]) != set(fresh_info["exports"]):
                        raise BuildError(
                            f"{rel(out)} exports {sorted(info['exports'])}, a fresh build "
                            f"exports {sorted(fresh_info['exports'])}; run examples/build.py"
                        )
            except BuildError as exc:
                print(f"FAIL  {rel(ex.source)}: {exc}", file=sys.stderr)
                failures += 1
                continue
            same = "identical" if committed == fresh else "differs from fresh build"
            print(f"ok        {rel(out)} ({len(committed)} bytes, {same}; {describe(info)})")
    if failures:
        print(f"{failures} example(s) failed the check", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="example folders to build (default: all)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild into a temp dir and verify the committed .wasm files",
    )
    args = parser.parse_args(argv)

    try:
        examples = discover()
    except BuildError as exc:
        print(f"FAIL  {exc}", file=sys.stderr)
        return 1
    if args.names:
        known = {ex.name: ex for ex in examples}
        unknown = [n for n in args.names if n not in known]
        if unknown:
            parser.error(
                f"unknown example(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        examples = [known[n] for n in args.names]
    if not examples:
        print("no examples found", file=sys.stderr)
        return 1
    try:
        return cmd_check(examples) if args.check else cmd_build(examples)
    except BuildError as exc:
        print(f"FAIL  {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
