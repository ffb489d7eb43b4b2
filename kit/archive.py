"""Tar archives for copying files into and out of containers.

A Docker engine reached over tcp:// or ssh:// does not share this machine's
filesystem, so kit never bind-mounts a local path into a container: what a
container reads is packed here and sent with the engine's archive API (PUT
/containers/{id}/archive, before the container starts); what it writes is
read back (GET /containers/{id}/archive) and unpacked here. The same path is
taken for a local engine, so one code path is tested everywhere.

Packing follows symlinks (the container gets regular files) and gives every
entry the container user's uid/gid, so a non-root container can write the
empty directories it is given. Unpacking trusts nothing in the stream: only
directories and regular files, only relative names below the destination,
permission bits only (no owners, no setuid).
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Iterable, Sequence

from kit.errors import KitError


class ArchiveError(KitError):
    """An archive from an engine holds something kit will not unpack."""


def _clean_target(target: str) -> str:
    """A container path as an archive name below '/': "/in/spec.json" -> "in/spec.json"."""
    norm = posixpath.normpath("/" + target.lstrip("/"))
    if norm == "/" or ".." in norm.split("/"):
        raise ValueError(f"not a container path to copy into: {target!r}")
    return norm.lstrip("/")


def _dir_info(name: str, uid: int, gid: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, uid, gid
    return info


def pack(entries: Sequence[tuple[str | os.PathLike | None, str]], uid: int = 0, gid: int = 0) -> IO[bytes]:
    """A tar (in a temporary file, rewound) that extracts at '/' into the given container paths.

    entries: (host path, container path); a host path of None gives an empty directory.
    Parent directories are created root-owned 0755; the entries themselves get uid:gid."""
    out = tempfile.TemporaryFile(prefix="kit-upload-")
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, dereference=True) as tar:
            parents: set[str] = set()

            def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
                info.mode = (info.mode & 0o755) | (0o700 if info.isdir() else 0o600)
                return info

            for source, target in entries:
                name = _clean_target(target)
                parts = name.split("/")
                for i in range(1, len(parts)):
                    parent = "/".join(parts[:i])
                    if parent not in parents:
                        parents.add(parent)
                        tar.addfile(_dir_info(parent, 0, 0))
                if source is None:
                    tar.addfile(_dir_info(name, uid, gid))
                else:
                    tar.add(str(source), arcname=name, recursive=True, filter=owned)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (the engine's archive stream)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def unpack(chunks: Iterable[bytes], dest: str | os.PathLike, strip: int = 1) -> list[str]:
    """Unpack a tar stream into dest (created), dropping the first `strip` name components
    (the archive of /out names its entries out/...). Returns the relative paths of the files."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks), 1 << 20), mode="r|") as tar:
        for member in tar:
            parts = [p for p in member.name.split("/") if p not in ("", ".")]
            if member.name.startswith("/") or ".." in parts:
                raise ArchiveError(f"the container's archive names a path outside its directory: {member.name!r}")
            parts = parts[strip:]
            if not parts:
                continue
            path = dest.joinpath(*parts)
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o700 | (member.mode & 0o755))
            elif member.isfile():
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with open(path, "wb") as f:
                    while True:
                        block = source.read(1 << 20)
                        if not block:
                            break
                        f.write(block)
                os.chmod(path, 0o600 | (member.mode & 0o755))
                files.append("/".join(parts))
            else:
                raise ArchiveError(f"the container's archive holds {member.name!r}, which is neither a file "
                                   "nor a directory (kit copies back only those)")
    return files
