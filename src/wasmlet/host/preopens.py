"""WASI preopens a guest cannot redirect (issue 10, break 1).

A preopen names a folder below the function's own folder, `<data_dir>/files/<name>`. Guests
write inside their preopens, so they can leave links there. Resolving a host path, checking
it and then handing it to wasmtime (which walks it again) was a race a guest could win by
swapping a folder for a link in between. Two rules make it impossible:

- preopens never nest, overlap or repeat, so no folder a guest can write lies on the way to
  another preopen (`check_paths`: refused at deploy and PATCH, and again at instantiate for
  versions stored before the rule);
- every preopen is opened by descriptor, one component at a time from the data dir, never
  following a link (`opened`), and wasmtime gets `/proc/self/fd/N`, which names the
  directory that descriptor holds whatever happens to the path afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from wasmlet.errors import GuestError

log = logging.getLogger(__name__)

READ_ONLY = "ro:"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _folder(host: str) -> tuple[str, ...]:
    """The components of a preopen's host folder, `.`, empty parts and `\\` normalised."""
    sub = host.removeprefix(READ_ONLY)
    spelled = sub.replace("\\", "/")
    parts = tuple(p for p in spelled.split("/") if p not in ("", "."))
    if spelled.startswith("/") or ".." in parts or "\x00" in sub:
        raise ValueError(
            f"allowed path {host!r} must be a relative folder inside the function's data "
            "folder (no '..', no absolute paths)"
        )
    if not parts:
        raise ValueError(
            f"allowed path {host!r} names the function's data folder itself: name a folder "
            "inside it"
        )
    return parts


def _guest(guest: str) -> str:
    parts = [p for p in guest.split("/") if p not in ("", ".")]
    if not guest.startswith("/") or ".." in parts or "\x00" in guest:
        raise ValueError(f"guest path {guest!r} must be absolute (and without '..')")
    return "/" + "/".join(parts)


def check_paths(paths: dict[str, str]) -> dict[str, str]:
    """`allowed_paths` normalised (`ro:` kept), or ValueError when a folder is not a
    relative one, when two folders nest, overlap or repeat, or two share a guest path."""
    out: dict[str, str] = {}
    folders: dict[tuple[str, ...], str] = {}
    guests: dict[str, str] = {}
    for host, guest in paths.items():
        parts = _folder(host)
        for other, spelled in folders.items():
            shorter = min(len(parts), len(other))
            if parts[:shorter] == other[:shorter]:
                raise ValueError(
                    f"allowed paths {spelled!r} and {host!r} overlap: preopens may not be "
                    "the same folder or one inside another"
                )
        folders[parts] = host
        where = _guest(guest)
        if where in guests:
            raise ValueError(
                f"allowed paths {guests[where]!r} and {host!r} both map to guest path {where!r}"
            )
        guests[where] = host
        read_only = host.startswith(READ_ONLY)
        out[(READ_ONLY if read_only else "") + "/".join(parts)] = where
    return out


@dataclass(frozen=True, slots=True)
class Preopen:
    path: str  # /proc/self/fd/N: valid while `opened` keeps N open
    guest: str
    read_only: bool


def _child(dir_fd: int, name: str, what: str) -> int:
    """Open (making it if missing) the folder `name` inside `dir_fd`, never through a link."""
    for _ in range(2):
        try:
            return os.open(name, _DIR, dir_fd=dir_fd)
        except FileNotFoundError:
            # Made meanwhile? Then open whatever is there now, still without following.
            with suppress(FileExistsError):
                os.mkdir(name, dir_fd=dir_fd)
        except OSError as exc:  # ELOOP: a link; ENOTDIR: a file
            raise GuestError(
                f"{what} cannot be opened: {name!r} on the way is a link or "
                "not a folder (wasmlet never follows links to a preopen)"
            ) from exc
    raise GuestError(f"{what} cannot be opened: {name!r} keeps disappearing")


def _walk(base: int, parts: tuple[str, ...], what: str) -> int:
    """A new descriptor for `parts` below the directory `base` (left open)."""
    fd = base
    try:
        for part in parts:
            child = _child(fd, part, what)
            if fd != base:
                os.close(fd)
            fd = child
    except BaseException:
        if fd != base:
            os.close(fd)
        raise
    return fd


@contextmanager
def opened(files_dir: Path, paths: dict[str, str]) -> Iterator[list[Preopen]]:
    """The preopens of `paths`, each held open by descriptor until the block ends.

    `files_dir` is `<data_dir>/files/<name>`: the data dir is the operator's and opened as
    given; `files` and `<name>` below it are walked like the preopens themselves. wasmtime
    (50) opens a preopen's directory in `WasiConfig.preopen_dir`; keeping ours open until
    `set_wasi` also covers a wasmtime that would open it later.
    """
    try:
        checked = check_paths(paths)
    except ValueError as exc:
        raise GuestError(f"this version's allowed paths are refused: {exc}") from None
    with ExitStack() as stack:
        data_fd = os.open(files_dir.parent.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        stack.callback(os.close, data_fd)
        root = _walk(data_fd, (files_dir.parent.name, files_dir.name), "the function's folder")
        stack.callback(os.close, root)
        out = []
        for host, guest in checked.items():
            fd = _walk(root, _folder(host), f"allowed path {host!r}")
            stack.callback(os.close, fd)
            out.append(Preopen(f"/proc/self/fd/{fd}", guest, host.startswith(READ_ONLY)))
        yield out


def remove_folder(files_root: Path, name: str) -> None:
    """Delete a function's folder (`<files_root>/<name>`) with everything in it, never
    following a link a guest left there: rmtree with `dir_fd` opens each folder it enters
    relative to its parent without following links."""
    try:
        root = os.open(files_root, _DIR)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        shutil.rmtree(name, dir_fd=root)
    except FileNotFoundError:
        pass
    except OSError as exc:  # e.g. the folder itself replaced by a link: leave it, say so
        log.warning("could not remove the folder of deleted function %r: %s", name, exc)
    finally:
        os.close(root)


__all__ = ["Preopen", "check_paths", "opened", "remove_folder"]
