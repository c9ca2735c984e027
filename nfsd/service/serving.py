"""What only a serving process builds: the namespace and the programs over it.

A module of its own so that ``nfsd.service.app`` imports it when a process
is about to serve (a single server, a worker), never in a supervisor: the
namespace (``merge``), the instant-recovery sessions, the NFS procedures and
the XDR of their calls are about 10 MB of an interpreter's memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from instant.sessions import SessionRegistry
from merge import build_namespace
from nfsd.programs import READ_BUFFERS
from nfsd.programs.access import AccessControl
from nfsd.programs.build import build_programs
from nfsd.programs.mountlist import MountList
from nfsd.programs.sessions import SessionManager
from nfsd.rpc import Program
from nfsd.service.config import Config

log = logging.getLogger("recovery_fs.service")


class StorageUnreadable(Exception):
    """The namespace of the storage could not be built (the message says why)."""


def serving_programs(
    cfg: Config,
    secret: bytes,
    access: AccessControl,
    mounts: MountList | None,
    *,
    read_buffers: int = READ_BUFFERS,
    shared_listings: Path | None = None,
) -> list[Program]:
    """MOUNT and NFS over the storage's namespace, sessions included;
    ``read_buffers``: this process's share of the server's READ buffers;
    ``shared_listings``: where a worker shares large listings with the
    others (``merge.shared``), None for a server of one process."""
    try:
        shared = str(shared_listings) if shared_listings is not None else None
        namespace = build_namespace(str(cfg.storage), shared_listings=shared)
    except Exception as e:
        log.exception("cannot build the namespace of %s", cfg.storage)
        raise StorageUnreadable(f"cannot read the storage {cfg.storage}: {e}") from e
    # Instant-recovery sessions published in the state directory (every process finds them).
    sessions = SessionManager(SessionRegistry(cfg.state_dir), namespace, secret)
    return build_programs(
        namespace,
        secret,
        access,
        cfg.export_path,
        udp=cfg.udp,
        sessions=sessions,
        mounts=mounts,
        read_buffers=read_buffers,
    )
