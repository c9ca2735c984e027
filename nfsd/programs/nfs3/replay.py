"""The answer to a change retransmitted after a restart, rebuilt from the session database.

The in-memory reply cache (``nfsd.programs.drc``) is gone after a restart;
what survives is the key of each successful REMOVE, RMDIR, RENAME, CREATE,
MKDIR and SYMLINK, committed in the change's own transaction
(``SessionNamespace.recording``).  A retransmission whose key is there
gets success again, with today's attributes (a created object's handle is
found by its name), instead of NOENT or EXIST for its own change.
"""

from __future__ import annotations

from typing import Any

from merge.namespace import NamespaceError
from nfsd.programs.nfs3.service import decode_name
from nfsd.programs.nfs3.session import SessionNfs
from nfsd.programs.nfs3.write import created_body
from nfsd.programs.sessions import Session
from nfsd.rpc import CallContext, Reply
from xdr import nfs3
from xdr.nfs3 import NFS3Packer


def replay(  # noqa: PLR0917
    svc: SessionNfs, ctx: CallContext, number: int, args: Any, s: Session, key: bytes
) -> Reply | None:
    """The success reply of a call already made, or None to run it."""
    if not s.ns.recorded(key):
        return None
    p = NFS3Packer()
    p.pack_uint(nfs3.NFS3_OK)
    try:
        if number in (nfs3.NFSPROC3_REMOVE, nfs3.NFSPROC3_RMDIR):
            _, dfid = svc.target(args.object.dir)
            d = svc.attrs(s, dfid)
            p.pack_wcc_data(svc.wcc(s, d, d))
        elif number == nfs3.NFSPROC3_RENAME:
            for fh in (args.from_.dir, args.to.dir):
                _, dfid = svc.target(fh)
                d = svc.attrs(s, dfid)
                p.pack_wcc_data(svc.wcc(s, d, d))
        else:
            _, dfid = svc.target(args.where.dir)
            d = svc.attrs(s, dfid)
            a = s.ns.lookup(dfid, decode_name(args.where.name))
            return Reply([p.get_buffer() + created_body(svc, s, a, dfid, d)])
    except NamespaceError:
        return None
    ctx.note += " (retransmitted after a restart: success again)"
    return Reply([p.get_buffer()])
