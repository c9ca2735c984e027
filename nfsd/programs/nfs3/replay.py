"""The answer to a change made already, rebuilt from the session database.

Design notes
------------
The in-memory reply cache (``nfsd.programs.drc``) is gone after a restart;
what survives is the key of each successful REMOVE, RMDIR, RENAME, CREATE,
MKDIR and SYMLINK, committed in the change's own transaction
(``SessionNamespace.recording``).  A retransmission whose key is there gets
success again, instead of NOENT or EXIST for its own change.

A recorded call is never run again, whatever changed since: run again, a
CREATE whose file another call removed since would bring it back.  Its
answer is ``NFS3_OK`` with what is known today, and what no longer is left
out, as RFC 1813 allows (a ``post_op_fh3`` and a ``post_op_attr`` may be
absent, and so may either half of a ``wcc_data``; the client then LOOKUPs
the name, or drops its cached attributes):

=================  ========================================================
procedure          the body after ``NFS3_OK``
=================  ========================================================
REMOVE, RMDIR      the directory's ``wcc_data``: its attributes now, as
                   before and after (neither if it is gone)
RENAME             the same, for each of the two directories
CREATE, MKDIR,     the object now under the name, handle and attributes,
SYMLINK            if it is of the kind made (else neither: a file created
                   since in a removed folder's place is not what MKDIR
                   made); then the directory's ``wcc_data``
=================  ========================================================

LINK and MKNOD are never recorded: a session refuses both (NOTSUPP).
"""

from __future__ import annotations

from typing import Any

from merge.namespace import Attrs, Kind, NamespaceError
from nfsd.programs.errors import NfsError
from nfsd.programs.nfs3.service import decode_name
from nfsd.programs.nfs3.session import SessionNfs
from nfsd.programs.sessions import Session
from nfsd.rpc import CallContext, Reply
from xdr import nfs3
from xdr.nfs3 import NFS3Packer

MADE = {
    nfs3.NFSPROC3_CREATE: Kind.REG,
    nfs3.NFSPROC3_MKDIR: Kind.DIR,
    nfs3.NFSPROC3_SYMLINK: Kind.LNK,
}
"""The kind of object each recorded procedure that makes one makes."""


def replay(  # noqa: PLR0917
    svc: SessionNfs, ctx: CallContext, number: int, args: Any, s: Session, key: bytes
) -> Reply | None:
    """The success reply of a call already made, or None (not recorded) to run it."""
    if not s.ns.recorded(key):
        return None
    ctx.note += " (made already, recorded: success again)"
    return made_reply(svc, number, args, s)


def made_reply(svc: SessionNfs, number: int, args: Any, s: Session) -> Reply:
    """``NFS3_OK`` and what today's state still tells of the call's change (see above)."""
    p = NFS3Packer()
    p.pack_uint(nfs3.NFS3_OK)
    if number in (nfs3.NFSPROC3_REMOVE, nfs3.NFSPROC3_RMDIR):
        p.pack_wcc_data(_dir_wcc(svc, s, args.object.dir)[1])
    elif number == nfs3.NFSPROC3_RENAME:
        p.pack_wcc_data(_dir_wcc(svc, s, args.from_.dir)[1])
        p.pack_wcc_data(_dir_wcc(svc, s, args.to.dir)[1])
    else:
        dfid, wcc = _dir_wcc(svc, s, args.where.dir)
        a = _made(s, dfid, decode_name(args.where.name), MADE[number])
        fh = nfs3.post_op_fh3(a is not None, svc.fh(s, a.fileid) if a is not None else None)
        p.pack_post_op_fh3(fh)
        p.pack_post_op_attr(svc.post(s, a))
        p.pack_wcc_data(wcc)
    return Reply([p.get_buffer()])


def _dir_wcc(svc: SessionNfs, s: Session, fh: nfs3.nfs_fh3) -> tuple[int | None, nfs3.wcc_data]:
    """A directory's fileid and its attributes now, as before and after; None and
    no attributes for a directory gone since (or of a session gone)."""
    try:
        _, dfid = svc.target(fh)
    except NfsError:
        return None, svc.wcc(s, None, None)
    d = svc.maybe_attrs(s, dfid)
    return (dfid if d is not None else None), svc.wcc(s, d, d)


def _made(s: Session, dfid: int | None, name: str, kind: Kind) -> Attrs | None:
    """The object of ``kind`` now named ``name`` in ``dfid``, or None."""
    if dfid is None:
        return None
    try:
        a = s.ns.lookup(dfid, name)
    except NamespaceError:
        return None
    return a if a.kind == kind else None
