"""Values of NFS call arguments that a session's namespace takes.

A module of its own so that the NFS procedures that pass them
(``nfsd.programs.nfs3.write``) do not import :mod:`instant.namespace`, its
store and sqlite3 (about 3 MB of a worker's memory), until a session is
opened; :mod:`instant.namespace` re-exports both names.
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
