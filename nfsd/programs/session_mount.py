"""MOUNT of instant-recovery sessions: MNT of ``/recover/instant/NAME``, and EXPORT's rows.

Each session is an export of its own (``nfsd.programs.sessions``), with
its own client list: a MNT of its path (or of a folder below it) is
checked against that list, not the read-only export's, and answers the
handle of the session's root (or of the folder).  EXPORT lists a session
only to a host its list admits, and a MNT of a session that does not exist
is ``MNT3ERR_ACCES``, as one the host may not mount: a name is not learnt
by trying it.
"""

from __future__ import annotations

from instant.sessions import EXPORT_PREFIX
from merge.namespace import Kind, NamespaceError
from nfsd.programs.access import AccessControl
from nfsd.programs.sessions import SessionManager
from nfsd.rpc import CallContext
from xdr import mount3

PREFIX = EXPORT_PREFIX.encode()


def is_session_path(path: bytes) -> bool:
    return path.startswith(PREFIX)


def mount_session(
    sessions: SessionManager, access: AccessControl, ctx: CallContext, path: bytes
) -> tuple[int, bytes, list[int]]:
    """(status, root handle, flavours) of a MNT of a session path."""
    if b"\0" in path:
        return mount3.MNT3ERR_NOENT, b"", []
    parts = [p.decode("utf-8", "surrogateescape") for p in path[len(PREFIX) :].split(b"/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return mount3.MNT3ERR_NOENT, b"", []
    s = sessions.by_export(EXPORT_PREFIX + parts[0])
    if s is None:
        # No such session: MNT3ERR_ACCES, what a host its list would not admit gets
        # (check_mount), so a stranger learns no session's name.  As mountd's
        # get_rootfh: a path exported to no entry for this host (auth_authenticate
        # finds none) is MNT3ERR_ACCES, whether or not it exists.
        return mount3.MNT3ERR_ACCES, b"", []
    status, options = access.check_mount(ctx, s.info.export_path)
    if options is None:
        return status, b"", []
    try:
        fid = s.ns.resolve(tuple(parts[1:]))
        if s.ns.getattr(fid).kind != Kind.DIR:
            return mount3.MNT3ERR_NOTDIR, b"", []
    except NamespaceError:
        return mount3.MNT3ERR_NOENT, b"", []
    sessions.note_client(s, ctx.peer)
    return mount3.MNT3_OK, sessions.encode(s, fid), list(access.flavors(options))


def session_exports(
    sessions: SessionManager, access: AccessControl, ctx: CallContext
) -> list[mount3.exportnode]:
    """EXPORT's rows of the sessions whose list admits the caller."""
    nodes = []
    for s in sessions.sessions():
        path = s.info.export_path
        export = sessions.table.get(path)
        if export is not None and access.admits(ctx, path):
            nodes.append(
                mount3.exportnode(path.encode(), [c.text.encode() for c in export.clients])
            )
    return nodes
