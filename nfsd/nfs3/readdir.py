"""READDIR (RFC 1813 §3.3.16) and READDIRPLUS (§3.3.17).

Design notes: the cookie scheme
-------------------------------
An entry's cookie is a 63-bit hash of its name (never 0, which means "from
the start"), and a directory is listed in cookie order.  A client that
resumes at cookie ``c`` gets the entries whose cookie is greater than
``c``: entries that came or went meanwhile shift nothing, no name is
listed twice, and a cookie stays meaningful across restarts.  The cookie
verifier is one constant of the installation; no verifier is refused, so a
client never sees ``NFS3ERR_BAD_COOKIE``.

The sorted listing of a directory is cached while the namespace returns the
same listing object, so paging through 10,000 entries sorts them once.

Sizes: ``count`` (READDIR) and ``maxcount`` (READDIRPLUS) bound the whole
reply body; ``dircount`` bounds the fileid, name and cookie bytes of the
entries.  A reply never exceeds them; if not even one entry fits, the
answer is ``NFS3ERR_TOOSMALL``.
"""

from __future__ import annotations

import bisect

from merge.namespace import Kind, NamespaceError
from nfsd.errors import NfsError, nfs_error
from nfsd.nfs3.service import Nfs3Service, post_op_attr_of
from nfsd.rpc import CallContext, Reply
from xdr import nfs3
from xdr.nfs3 import NFS3Packer


def _padded(n: int) -> int:
    return (n + 3) & ~3


# Fixed XDR sizes (bytes) of the parts of a reply.
STATUS = 4
POST_OP_ATTR = 4 + 84
VERF = 8
LIST_END = 8  # the "no more entries" word and the eof bool
ENTRY_FIXED = 4 + 8 + 4 + 8  # value-follows, fileid, name length, cookie
HANDLE_MAX = 4 + 4 + 64  # post_op_fh3 with the longest handle


def _listing(svc: Nfs3Service, fh: nfs3.nfs_fh3):
    path = svc.path_of(fh)
    dattrs = svc.attrs(path)
    if dattrs.kind != Kind.DIR:
        raise NfsError(nfs3.NFS3ERR_NOTDIR)
    try:
        entries = svc.namespace.readdir(path)
    except NamespaceError as e:
        raise nfs_error(e) from e
    rows, cookies = svc.listings.get(path, entries)
    return path, dattrs, rows, cookies


# RFC 1813 §3.3.16
def readdir3(svc: Nfs3Service, ctx: CallContext, args: nfs3.READDIR3args) -> Reply:
    path, dattrs, rows, cookies = _listing(svc, args.dir)
    start = bisect.bisect_right(cookies, args.cookie) if args.cookie else 0
    budget = args.count - (STATUS + POST_OP_ATTR + VERF + LIST_END)
    if budget < 0:
        raise NfsError(nfs3.NFS3ERR_TOOSMALL)
    out: list[nfs3.entry3] = []
    i = start
    while i < len(rows):
        cookie, raw, _name, a = rows[i]
        size = ENTRY_FIXED + _padded(len(raw))
        if size > budget:
            break
        budget -= size
        out.append(nfs3.entry3(a.fileid, raw, cookie))
        i += 1
    eof = i == len(rows)
    ctx.note = f"/{'/'.join(path)} cookie={args.cookie} count={args.count} entries={len(out)}"
    if not out and not eof:
        raise NfsError(nfs3.NFS3ERR_TOOSMALL)
    p = NFS3Packer()
    p.pack_READDIR3res(
        nfs3.READDIR3res(
            nfs3.NFS3_OK,
            nfs3.READDIR3resok(post_op_attr_of(dattrs), svc.cookieverf, nfs3.dirlist3(out, eof)),
        )
    )
    return Reply([p.get_buffer()])


# RFC 1813 §3.3.17
def readdirplus3(svc: Nfs3Service, ctx: CallContext, args: nfs3.READDIRPLUS3args) -> Reply:
    path, dattrs, rows, cookies = _listing(svc, args.dir)
    start = bisect.bisect_right(cookies, args.cookie) if args.cookie else 0
    budget = args.maxcount - (STATUS + POST_OP_ATTR + VERF + LIST_END)
    if budget < 0:
        raise NfsError(nfs3.NFS3ERR_TOOSMALL)
    dir_budget = args.dircount
    out: list[nfs3.entryplus3] = []
    i = start
    while i < len(rows):
        cookie, raw, name, a = rows[i]
        info = ENTRY_FIXED + _padded(len(raw))
        size = info + POST_OP_ATTR + HANDLE_MAX
        if size > budget or (out and info > dir_budget):
            break
        budget -= size
        dir_budget -= info
        child = (*path, name)
        out.append(
            nfs3.entryplus3(
                a.fileid,
                raw,
                cookie,
                post_op_attr_of(a),
                nfs3.post_op_fh3(True, svc.handle_of(child, a)),
            )
        )
        i += 1
    eof = i == len(rows)
    ctx.note = (
        f"/{'/'.join(path)} cookie={args.cookie} dircount={args.dircount} "
        f"maxcount={args.maxcount} entries={len(out)}"
    )
    if not out and not eof:
        raise NfsError(nfs3.NFS3ERR_TOOSMALL)
    p = NFS3Packer()
    p.pack_READDIRPLUS3res(
        nfs3.READDIRPLUS3res(
            nfs3.NFS3_OK,
            nfs3.READDIRPLUS3resok(
                post_op_attr_of(dattrs), svc.cookieverf, nfs3.dirlistplus3(out, eof)
            ),
        )
    )
    return Reply([p.get_buffer()])
