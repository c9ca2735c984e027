"""Values of NFS call arguments that a session's namespace takes, and a mode rule both use.

A module of its own so that the NFS procedures that pass them
(``nfsd.programs.nfs3.write``) do not import :mod:`instant.namespace`, its
store and sqlite3 (about 3 MB of a worker's memory), until a session is
opened; :mod:`instant.namespace` re-exports them.
"""

from __future__ import annotations

import enum

NOW = -1
"""A time given as ``NOW`` is the server's clock (SET_TO_SERVER_TIME)."""


class CreateHow(enum.IntEnum):
    """createmode3 of RFC 1813 §3.3.8."""

    UNCHECKED = 0
    GUARDED = 1
    EXCLUSIVE = 2


S_ISUID, S_ISGID, S_IXGRP = 0o4000, 0o2000, 0o010


def without_setid(mode: int) -> int:
    """``mode`` as a write or truncate by a caller without ``CAP_FSETID`` leaves it:
    without set-user-ID, and without set-group-ID when group execute is set (Linux's
    ``should_remove_suid``; set-group-ID without it is a locking mark, kept)."""
    if mode & S_ISGID and mode & S_IXGRP:
        return mode & ~(S_ISUID | S_ISGID)
    return mode & ~S_ISUID
