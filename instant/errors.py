"""Errors of the writable namespace, beside ``merge.namespace``'s.

Every class derives from :class:`merge.namespace.NamespaceError`, so a
server that maps those already answers something for these; each is meant
to become one ``nfsstat3``:

=======================  ===================
error                    nfsstat3
=======================  ===================
``Exists``               ``NFS3ERR_EXIST``
``NotEmpty``             ``NFS3ERR_NOTEMPTY``
``NoSpace``              ``NFS3ERR_NOSPC``
``NotSupported``         ``NFS3ERR_NOTSUPP``
``InvalidArgument``      ``NFS3ERR_INVAL``
``NotSync``              ``NFS3ERR_NOT_SYNC``
``NameTooLong``          ``NFS3ERR_NAMETOOLONG``
``Stale``                ``NFS3ERR_STALE``
``TooLarge``             ``NFS3ERR_FBIG``
``NotPermitted``         ``NFS3ERR_PERM``
=======================  ===================

``NotFound``, ``NotADirectory``, ``IsADirectory`` and ``StorageIOError``
are merge's, reused as they are.
"""

from __future__ import annotations

from merge.namespace import NamespaceError


class Exists(NamespaceError):
    """The name exists (CREATE GUARDED, EXCLUSIVE with another verifier, MKDIR...)."""


class NotEmpty(NamespaceError):
    """RMDIR, or RENAME over a directory, that still has entries."""


class NoSpace(NamespaceError):
    """The session's quota, or the cache file system, is full; nothing was written."""


class NotSupported(NamespaceError):
    """An operation the session refuses by design (hard links, device nodes)."""


class InvalidArgument(NamespaceError):
    """A bad name (``.``, ``..``, ``/``, NUL) or a directory renamed into itself."""


class NotSync(NamespaceError):
    """SETATTR guarded by a ctime that is no longer the file's."""


class NameTooLong(NamespaceError):
    """A name longer than :data:`instant.namespace.NAME_MAX` bytes."""


class Stale(NamespaceError):
    """The session was stopped (or the entry's node is gone) while in use."""


class TooLarge(NamespaceError):
    """A file would end past :data:`MAX_FILE_SIZE` (a WRITE's end, a SETATTR's size)."""


class NotPermitted(NamespaceError):
    """The caller may not remove or rename an entry of a sticky directory: Linux's
    ``EPERM`` from ``may_delete`` (``check_sticky``), which knfsd answers
    ``NFS3ERR_PERM``."""


MAX_FILE_SIZE = (1 << 63) - 1
"""The largest size of a session's file: FSINFO's ``maxfilesize``, and the most a
size or a piece's end can be in the session's database (sqlite's INTEGER)."""


class WouldWait(Exception):
    """A call that must not wait (``SessionNamespace.nowait``) would have: the
    session's read connection is another thread's, or the answer needs a
    file's map loaded.  Not a NamespaceError: no client ever sees it; the
    server hands the call to a thread that may wait."""


class MadeAlready(Exception):
    """A change made under a call's key (``SessionNamespace.recording``) whose key
    was committed already, by the same call served by another process while this
    one waited for the write lock: not made again.  Not a NamespaceError: it is no
    failure; the server answers the first call's success
    (``nfsd.programs.nfs3.replay``)."""
