"""The procedures that would change something: all refused as NFS3ERR_ROFS.

RFC 1813 asks each refusal to carry the weak cache consistency data of
what it would have changed (``wcc_data``): before and after are the same
attributes, since nothing changed.  The handle is still checked first, so a
bad or stale one gets the error it deserves.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from merge.namespace import Attrs, NamespaceError
from nfsd.programs.nfs3.service import Nfs3Service, nfstime, post_op_attr_of
from nfsd.rpc import CallContext, ProcedureError, Reply
from xdr import nfs3
from xdr.nfs3 import NFS3Packer

_ROFS = struct.pack(">I", nfs3.NFS3ERR_ROFS)


def _wcc(svc: Nfs3Service, p: NFS3Packer, a: Attrs | None) -> None:
    """wcc_data with identical before and after attributes."""
    if a is None:
        p.pack_wcc_data(nfs3.wcc_data(nfs3.pre_op_attr(False, None), post_op_attr_of(None, 0)))
        return
    before = nfs3.wcc_attr(a.size, nfstime(a.mtime_ns), nfstime(a.ctime_ns))
    p.pack_wcc_data(nfs3.wcc_data(nfs3.pre_op_attr(True, before), post_op_attr_of(a, svc.fsid)))


def _attrs(svc: Nfs3Service, fh: nfs3.nfs_fh3) -> Attrs:
    return svc.attrs(svc.path_of(fh))


def _attrs_or_none(svc: Nfs3Service, fh: nfs3.nfs_fh3) -> Attrs | None:
    try:
        return _attrs(svc, fh)
    except (ProcedureError, NamespaceError):
        return None


def refuse(
    *fields: Callable[[Any], nfs3.nfs_fh3 | tuple[str, nfs3.nfs_fh3]],
) -> Callable[[Nfs3Service, CallContext, Any], Reply]:
    """A procedure that answers ROFS with one body part per handle-getter.

    A getter returning a handle adds ``wcc_data`` for it; one returning
    ``("post_op_attr", handle)`` adds a ``post_op_attr``.
    """

    def run(svc: Nfs3Service, ctx: CallContext, args: Any) -> Reply:
        p = NFS3Packer()
        p.pack_raw(_ROFS)
        for i, get in enumerate(fields):
            f = get(args)
            fh = f[1] if isinstance(f, tuple) else f
            # The first handle is checked (a bad or stale one gets its own error);
            # a second one (RENAME's target folder, LINK's) may be another
            # export's, a session's: ROFS still, its attributes left out.
            a = _attrs(svc, fh) if i == 0 else _attrs_or_none(svc, fh)
            if isinstance(f, tuple):
                p.pack_post_op_attr(post_op_attr_of(a, svc.fsid))
            else:
                _wcc(svc, p, a)
        ctx.status = nfs3.NFS3ERR_ROFS
        return Reply([p.get_buffer()])

    return run


# RFC 1813 §3.3.2, 3.3.7–3.3.15, 3.3.21: one line each.
setattr3 = refuse(lambda a: a.object)
write3 = refuse(lambda a: a.file)
create3 = refuse(lambda a: a.where.dir)
mkdir3 = refuse(lambda a: a.where.dir)
symlink3 = refuse(lambda a: a.where.dir)
mknod3 = refuse(lambda a: a.where.dir)
remove3 = refuse(lambda a: a.object.dir)
rmdir3 = refuse(lambda a: a.object.dir)
rename3 = refuse(lambda a: a.from_.dir, lambda a: a.to.dir)
link3 = refuse(lambda a: ("post_op_attr", a.file), lambda a: a.link.dir)
commit3 = refuse(lambda a: a.file)
