"""The one interface between the NFS server (``nfsd``) and the storage (``merge``).

``nfsd`` knows presented paths, attributes and byte runs; it never sees a
storage path, a pancbt file or a SmartMotion link.  ``merge`` knows nothing
of RPC.  Every layer of the namespace stack (passthrough, links, merge, hide)
implements :class:`Namespace`; the server holds only the top one.

Design notes
------------
* A *presented path* is a tuple of names below the export root; ``()`` is
  the root itself.  Names never contain ``/`` and are never ``.`` or ``..``.
* Errors are the exceptions below, never ``OSError``: the server maps each
  to one ``nfsstat3`` in one place (``nfsd/programs/errors.py``).
* Reading is done in *runs*: ``Reader.runs(offset, count)`` cuts a byte range
  of the presented file into pieces that are either a range of an open file
  descriptor or zeros.  The server ``preadv``s file runs straight into its
  reply buffer, so merged images cost no extra copy.

====================  =====================================================
run                    meaning
====================  =====================================================
``Run(fd, pos, n)``    ``n`` bytes at ``pos`` of the open file ``fd``; a
                       short read there is an error (the input changed)
``Run(-1, 0, n)``      ``n`` zero bytes
====================  =====================================================
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

PresentedPath = tuple[str, ...]


class NamespaceError(Exception):
    """Base of every error a namespace raises to the server."""


class NotFound(NamespaceError):
    """No such presented entry (also: hidden, or rule 5 of namespace.md)."""


class Withheld(NotFound):
    """The storage holds the name, but rule 5 withholds it (a symbolic link leading
    outside or nowhere, a FIFO...): "no such file" to every client, but a layer
    above may need to know the name is there (``merge.overlay``: a flat image
    beside a pancbt that is not a regular file is withheld too)."""


class NotADirectory(NamespaceError):
    """A path component, or the target of a directory operation, is a file."""


class IsADirectory(NamespaceError):
    """A file operation (open/read) on a directory."""


class AccessDenied(NamespaceError):
    """The server process may not read the storage entry."""


class InputChanged(NamespaceError):
    """An input of a presented file changed or failed while being read.

    Raised instead of returning bytes the namespace is not sure of.
    """


class StorageIOError(NamespaceError):
    """Any other failure reading the storage."""


class Kind(enum.IntEnum):
    """What a presented entry is."""

    REG = 1
    DIR = 2
    LNK = 5  # only a writable namespace (instant/) presents symbolic links


@dataclass(frozen=True, slots=True)
class Attrs:
    """Attributes of a presented entry, already read-only (write bits clear)."""

    kind: Kind
    size: int
    used: int
    mode: int  # permission bits only, e.g. 0o444 / 0o555
    nlink: int
    uid: int
    gid: int
    fileid: int  # unique in the export, stable across restarts, 1 .. 2**63-1
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


class Run(NamedTuple):
    """A piece of a read: ``length`` bytes of ``fd`` at ``pos``, or zeros (fd -1)."""

    fd: int
    pos: int
    length: int


ZERO_FD = -1


@dataclass(frozen=True, slots=True)
class FsStats:
    """Capacity figures for FSSTAT, read from the storage file system."""

    total_bytes: int
    free_bytes: int
    avail_bytes: int
    total_files: int
    free_files: int
    avail_files: int


class Reader(Protocol):
    """An opened presented regular file.  Use as a context manager.

    While a reader is held its file descriptors stay open and valid, even if
    the namespace drops it from its cache meanwhile.  A reader may also offer
    ``maps() -> dict[int, memoryview]``: read-only mappings of its runs'
    descriptors (``merge.sources``), which only the kernel may read.
    """

    @property
    def size(self) -> int: ...

    def runs(self, offset: int, count: int) -> list[Run]:
        """Cut ``[offset, min(offset+count, size))`` into runs, in order.

        Returns ``[]`` at or past the end of the file.
        """
        ...

    def __enter__(self) -> Reader: ...

    def __exit__(self, *exc: object) -> None: ...


def reader_maps(reader: object) -> dict[int, memoryview]:
    """The reader's ``maps()`` (see :class:`Reader`), or ``{}`` when it offers none."""
    maps = getattr(reader, "maps", None)
    return maps() if maps is not None else {}


class Namespace(Protocol):
    """A read-only tree of presented entries."""

    def getattr(self, path: PresentedPath) -> Attrs:
        """Attributes of ``path``; raises NotFound / NotADirectory."""
        ...

    def readdir(self, path: PresentedPath) -> Sequence[tuple[str, Attrs]]:
        """Every presented entry of the directory ``path`` with its attributes.

        The order is not significant (the server orders by cookie).
        """
        ...

    def open(self, path: PresentedPath) -> Reader:
        """Open a presented regular file; raises IsADirectory for directories."""
        ...

    def fsstat(self) -> FsStats:
        """Capacity of the storage file system."""
        ...
