"""BlobStore: content-addressed, idempotent, and never a path outside its root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from wasmlet.errors import NotFound
from wasmlet.registry.blobs import BlobStore, digest_of, is_digest


def test_put_get_round_trip(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"\0asm\x01\0\0\0 some module"
    digest = store.put(data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest() == digest_of(data)
    assert store.get(digest) == data
    assert store.exists(digest)
    hexd = digest.removeprefix("sha256:")
    assert (tmp_path / "blobs" / "sha256" / hexd[:2] / hexd).read_bytes() == data


def test_put_is_idempotent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    first = store.put(b"same bytes")
    path = store.path(first)
    mtime = path.stat().st_mtime_ns
    assert store.put(b"same bytes") == first
    assert path.stat().st_mtime_ns == mtime  # not rewritten
    assert list(store.digests()) == [first]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files


def test_delete_and_missing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(b"to delete")
    store.delete(digest)
    assert not store.exists(digest)
    with pytest.raises(NotFound, match=digest):
        store.get(digest)
    store.delete(digest)  # deleting twice is fine


def test_digests_lists_every_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digests = {store.put(f"blob {i}".encode()) for i in range(20)}
    assert set(store.digests()) == digests
    assert len(digests) == 20


def test_empty_store_has_no_digests(tmp_path: Path) -> None:
    assert list(BlobStore(tmp_path).digests()) == []


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:../../../etc/passwd",
        "../" + "a" * 64,
        "sha256:" + "A" * 64,  # upper case is not how digests are written
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "md5:" + "a" * 32,
        "a" * 64,
        "sha256:" + "a" * 62 + "/x",
        "",
    ],
)
def test_rejects_anything_but_a_digest(tmp_path: Path, bad: str) -> None:
    store = BlobStore(tmp_path / "blobs")
    assert not is_digest(bad)
    for op in (store.path, store.get, store.exists, store.delete):
        with pytest.raises(ValueError, match="not a sha256 digest"):
            op(bad)


def test_is_digest() -> None:
    assert is_digest(digest_of(b"x"))
    assert not is_digest(digest_of(b"x") + "\n")
