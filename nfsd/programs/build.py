"""The programs a worker serves on its NFS port: MOUNT v3 and NFS v3, built.

Kept apart from ``nfsd.programs``'s ``__init__`` so that importing a light
part of the package (the exports check, the portmapper, the DUMP list: what
a supervisor needs) does not import the namespace, the NFS procedures and
the XDR of every call, which only a serving process needs (about 10 MB of
a process's memory).
"""

from __future__ import annotations

from merge.namespace import Namespace
from nfsd.programs import EXPORT_PATH, READ_BUFFERS
from nfsd.programs.access import AccessControl
from nfsd.programs.buffers import BufferPool
from nfsd.programs.handles import HandleCodec
from nfsd.programs.mountd import MountService
from nfsd.programs.mountlist import MountList
from nfsd.programs.nfs3 import program as nfs3_program
from nfsd.programs.nfs3.fastpath import FastPath
from nfsd.programs.nfs3.fastwrite import FastWrite
from nfsd.programs.nfs3.router import route_sessions
from nfsd.programs.nfs3.service import RTMAX, Nfs3Service, fsid_of
from nfsd.programs.sessions import SessionManager
from nfsd.rpc import Program


def build_programs(
    namespace: Namespace,
    secret: bytes,
    access: AccessControl,
    export_path: str = EXPORT_PATH,
    *,
    udp: bool = False,
    sessions: SessionManager | None = None,
    mounts: MountList | None = None,
    read_buffers: int = READ_BUFFERS,
) -> list[Program]:
    """MOUNT and NFS over one namespace, both behind ``access``.

    NFS over UDP only with ``udp`` (off by default, as knfsd since 2017: a
    lost fragment of a 32 KiB datagram costs the whole READ, and UDP is the
    reflection vector); MOUNT answers over UDP regardless (showmount, and
    clients whose mountproto is udp).  ``sessions``: the instant-recovery
    sessions, exports of their own beside ``export_path`` (``nfs3.router``).
    ``read_buffers``: the READ replies in flight at once (1 MiB each at most).
    """
    handles = HandleCodec(namespace, secret)
    nfs = Nfs3Service(namespace, handles, BufferPool(RTMAX, read_buffers), secret)
    export = access.table.get(export_path)
    fsids = {c.options.fsid for c in export.clients} - {None} if export else set()
    if len(fsids) == 1:
        nfs.fsid = fsid_of(fsids.pop())
    nfs_program = nfs3_program.build(nfs)
    nfs_program.guard = access.nfs_status
    fast = FastPath(nfs, access)
    nfs_program.fast = fast.serve  # GETATTR, ACCESS, READ, LOOKUP, READDIRPLUS: the same, sooner
    nfs_program.udp = udp
    nfs_program.idle = nfs.buffers.trim  # buffers unused for a while give their pages back
    if sessions is not None:
        router = route_sessions(nfs_program, nfs, access, sessions)
        fast.sessions = router.quick
        fast.writes = FastWrite(router.quick_write).serve
    mount = MountService(handles, export_path, access, sessions, mounts)  # mounts: DUMP's list
    return [mount.program(), nfs_program]
