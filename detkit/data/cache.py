"""Converted forms of dataset files: made once, then read by every later run, tool and process.

At COCO's scale a training set's annotation file and its proposal file cost minutes and
gigabytes to parse and check, in every process of every run; a form converted once (plain
NumPy arrays that each process memory-maps, so that the machine's page cache holds one copy)
costs a fraction of a second to open. :func:`converted` makes and finds such forms:

* Each lives in a folder under the cache root: ``$DETKIT_CACHE_DIR`` when set, else
  ``$XDG_CACHE_HOME/detkit``, else ``~/.cache/detkit``.
* The folder's name holds the SHA-256 of the source file's bytes, a digest of everything else
  the conversion depends on (the dataset a proposal file is paired with, an image folder, …)
  and :data:`RULES_VERSION`, the version of detkit's checks and conversions: a changed source,
  other settings or other rules name another folder, so a stale form is never found.
* It is built under a temporary name and renamed into place once complete (the unfinished
  copy of a process killed meanwhile is removed by the next conversion on its machine); its
  ``manifest.json``, written last, records what it was made from and the size of each of its
  files. A folder whose manifest is missing or names another source, or whose files have other
  sizes (a truncated copy, a foreign folder), is never read: it is made again, with a log line.
  Where two processes make the same folder at once, the first rename wins and the other's copy
  is removed.
* The source's hash is computed once per version of the file: a record keyed by the file's
  path, size, inode and modification and change times keeps it, so a start with the forms in
  place reads no source file at all.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..utils.errors import UserError
from ..utils.file_io import write_bytes_atomically

logger = logging.getLogger(__name__)

# The version of the rules by which sources are checked and converted; raising it makes every
# converted form be made again. 2: COCO records keep each annotation's id.
RULES_VERSION = 2
CACHE_VARIABLE = "DETKIT_CACHE_DIR"
MANIFEST = "manifest.json"
_HASH_CHUNK = 8 << 20


class CacheError(UserError, OSError):
    """The cache folder cannot be used (not a folder, not writable); the message names it."""


def cache_root() -> Path:
    """Where converted forms live: ``$DETKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/detkit``,
    else ``~/.cache/detkit``."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "detkit"


def source_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of the file ``path``'s bytes (hex), computed once per version of the file:
    a record under the cache root, keyed by its absolute path and checked against its size,
    inode, device and modification and change times, keeps it."""
    path = Path(path).resolve()
    info = path.stat()
    identity = {
        "path": str(path),
        "size": info.st_size,
        "inode": info.st_ino,
        "device": info.st_dev,
        "mtime_ns": info.st_mtime_ns,
        "ctime_ns": info.st_ctime_ns,
    }
    record = _folder("hashes") / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"
    try:
        known = json.loads(record.read_text())
        if {k: known.get(k) for k in identity} == identity and isinstance(known["sha256"], str):
            return known["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: hash the file
    digest = _hash_file(path, info.st_size)
    write_bytes_atomically(record, json.dumps({**identity, "sha256": digest}))
    return digest


def _hash_file(path: Path, size: int) -> str:
    started = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    if size > 1 << 30:
        logger.info(
            f"{path}: hashed {size / 2**30:.1f} GiB in {time.perf_counter() - started:.1f} s "
            "(once: the hash is kept until the file changes)"
        )
    return digest.hexdigest()


def key_digest(key: Mapping[str, Any]) -> str:
    """A digest of the JSON-able facts a conversion depends on besides its source."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def converted(
    kind: str,
    source: str | os.PathLike,
    key: Mapping[str, Any],
    build: Callable[[Path], Mapping[str, Any]],
) -> tuple[Path, dict]:
    """The folder of the ``kind`` of form made from ``source`` and ``key``, and its manifest;
    made first by ``build(folder)`` unless a complete one is in place.

    ``build`` writes its files into the empty folder it is given and returns the facts to keep
    in the manifest (JSON-able; e.g. counts and warnings to report on every use); an error it
    raises leaves nothing behind. ``key`` holds what besides the source's bytes the form
    depends on (JSON-able)."""
    source = Path(source)
    sha256 = source_digest(source)
    made_from = {"source": str(source.resolve()), "source_sha256": sha256, "key": dict(key)}
    made_from = json.loads(json.dumps(made_from, sort_keys=True, default=str))
    name = f"{source.stem}-{sha256[:16]}-{key_digest(key)[:12]}-v{RULES_VERSION}"
    folder = _folder(kind) / name
    manifest, problem = _read_manifest(folder, made_from)
    if manifest is not None:
        return folder, manifest
    if problem is not None:
        logger.warning(f"{folder}: {problem}; making it again")
        shutil.rmtree(folder, ignore_errors=True)
    return folder, _build(folder, made_from, build)


def converted_manifests(kind: str, source: str | os.PathLike) -> list[dict]:
    """The manifests of the complete forms of ``kind`` made from ``source`` as it is now, with
    any settings (e.g. a COCO file's records for any image folder)."""
    source = Path(source)
    sha256 = source_digest(source)
    pattern = f"{glob.escape(source.stem)}-{sha256[:16]}-*-v{RULES_VERSION}"
    manifests = []
    for folder in sorted(_folder(kind).glob(pattern)):
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("made_from", {}).get("source_sha256") == (
            sha256
        ):
            manifests.append(manifest)
    return manifests


def folder_size(folder: Path) -> str:
    """The size of a converted form's files, for a log line."""
    size = sum(p.stat().st_size for p in folder.iterdir())
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _folder(kind: str) -> Path:
    """``cache_root()/kind``, created; refused naming it when it cannot be."""
    folder = cache_root() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CacheError(
            f"cannot use {folder} for converted dataset files: {error.strerror or error}; set "
            f"{CACHE_VARIABLE} to a writable folder"
        ) from None
    return folder


def _read_manifest(folder: Path, made_from: dict) -> tuple[dict | None, str | None]:
    """The manifest of a complete ``folder`` made from ``made_from``; else None and why it
    cannot be used (None when there is no folder)."""
    if not folder.exists():
        return None, None
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None, "it has no manifest (an interrupted or foreign copy)"
    except (OSError, ValueError) as error:
        return None, f"its manifest cannot be read ({error})"
    if not isinstance(manifest, dict) or manifest.get("made_from") != made_from:
        return None, "it was made from another source or with other settings"
    for name, size in (manifest.get("files") or {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return None, f"its file {name} is missing or not of the size its manifest records"
    return manifest, None


def _remove_abandoned(folder: Path) -> None:
    """Removes the partial copies of ``folder`` that processes of this machine, now ended,
    left behind (killed mid-conversion); another machine's, or a running process's, stay."""
    prefix = f".{folder.name}.{socket.gethostname()}-"
    for partial in folder.parent.glob(f"{glob.escape(prefix)}*.partial"):
        pid = partial.name[len(prefix) :].split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            logger.info(f"removing {partial}, the unfinished conversion of an ended process")
            shutil.rmtree(partial, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _build(folder: Path, made_from: dict, build: Callable[[Path], Mapping[str, Any]]) -> dict:
    _remove_abandoned(folder)
    owner = f"{socket.gethostname()}-{os.getpid()}"
    partial = folder.with_name(f".{folder.name}.{owner}-{uuid.uuid4().hex[:8]}.partial")
    partial.mkdir()
    try:
        facts = dict(build(partial))
        files = {p.name: p.stat().st_size for p in sorted(partial.iterdir()) if p.is_file()}
        manifest = {"made_from": made_from, "files": files, **facts}
        (partial / MANIFEST).write_text(json.dumps(manifest))
        try:
            partial.rename(folder)
        except OSError:  # another process made it first: use theirs
            existing, problem = _read_manifest(folder, made_from)
            if existing is None:
                raise CacheError(f"{folder}: cannot be put in place ({problem})") from None
            return existing
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return manifest
