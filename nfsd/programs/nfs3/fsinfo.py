"""FSSTAT, FSINFO, PATHCONF (RFC 1813 §3.3.18–20): what the export is like."""

from __future__ import annotations

from merge.namespace import NamespaceError
from nfsd.programs.errors import nfs_error
from nfsd.programs.nfs3.service import MAXFILESIZE, RTMAX, Nfs3Service, post_op_attr_of
from nfsd.rpc import CallContext, Reply
from xdr import nfs3
from xdr.nfs3 import NFS3Packer

DTPREF = 64 * 1024
MAXNAMLEN = 255


# RFC 1813 §3.3.18: the storage file system's figures; nothing is free to write.
def fsstat3(svc: Nfs3Service, ctx: CallContext, args: nfs3.FSSTAT3args) -> Reply:
    path = svc.path_of(args.fsroot)
    a = svc.attrs(path)
    try:
        st = svc.namespace.fsstat()
    except NamespaceError as e:
        raise nfs_error(e) from e
    p = NFS3Packer()
    p.pack_FSSTAT3res(
        nfs3.FSSTAT3res(
            nfs3.NFS3_OK,
            nfs3.FSSTAT3resok(
                post_op_attr_of(a, svc.fsid),
                tbytes=st.total_bytes,
                fbytes=st.free_bytes,
                abytes=0,
                tfiles=st.total_files,
                ffiles=st.free_files,
                afiles=0,
                invarsec=0,
            ),
        )
    )
    return Reply([p.get_buffer()])


# RFC 1813 §3.3.19: 1 MiB transfers, files up to 2^63-1 (VM disks are large).
def fsinfo_resok(attrs: nfs3.post_op_attr, properties: int) -> nfs3.FSINFO3resok:
    """FSINFO's figures, the same for every export; ``properties`` says what it allows."""
    return nfs3.FSINFO3resok(
        attrs,
        rtmax=RTMAX,
        rtpref=RTMAX,
        rtmult=4096,
        wtmax=RTMAX,
        wtpref=RTMAX,
        wtmult=4096,
        dtpref=DTPREF,
        maxfilesize=MAXFILESIZE,
        time_delta=nfs3.nfstime3(0, 1),
        properties=properties,
    )


def pathconf_resok(attrs: nfs3.post_op_attr) -> nfs3.PATHCONF3resok:
    """PATHCONF's answer: one name per file, names up to 255 bytes, case kept."""
    return nfs3.PATHCONF3resok(
        attrs,
        linkmax=1,
        name_max=MAXNAMLEN,
        no_trunc=True,
        chown_restricted=True,
        case_insensitive=False,
        case_preserving=True,
    )


def fsinfo3(svc: Nfs3Service, ctx: CallContext, args: nfs3.FSINFO3args) -> Reply:
    path = svc.path_of(args.fsroot)
    a = svc.attrs(path)
    p = NFS3Packer()
    # no links to make, no times to set
    ok = fsinfo_resok(post_op_attr_of(a, svc.fsid), nfs3.FSF3_HOMOGENEOUS)
    p.pack_FSINFO3res(nfs3.FSINFO3res(nfs3.NFS3_OK, ok))
    return Reply([p.get_buffer()])


# RFC 1813 §3.3.20
def pathconf3(svc: Nfs3Service, ctx: CallContext, args: nfs3.PATHCONF3args) -> Reply:
    path = svc.path_of(args.object)
    a = svc.attrs(path)
    p = NFS3Packer()
    ok = pathconf_resok(post_op_attr_of(a, svc.fsid))
    p.pack_PATHCONF3res(nfs3.PATHCONF3res(nfs3.NFS3_OK, ok))
    return Reply([p.get_buffer()])
