"""The MOUNT program, version 3 (RFC 1813, Appendix I).

One export, ``/recover/images``.  ``MNT`` of it, or of a folder below it
(as libnfs does for ``nfs://host/recover/images/dir/file``, and as the
Linux server allows), returns that folder's handle; any other path is
``MNT3ERR_NOENT``, a file ``MNT3ERR_NOTDIR``.  The mount list kept for
``DUMP`` (``nfsd.programs.mountlist``: shared by worker processes) lives
as long as the server only: clients do not rely on it (the Linux client
never sends ``UMNT``), and the server writes nothing it need not.

Who may mount is ``nfsd.programs.access``'s answer, asked *before* the path is
looked at, so that a stranger learns nothing of the tree; the MNT reply
lists only the flavours the client's ``sec=`` allows (a list holding
AUTH_NONE tells the Linux client any flavour will do).  ``EXPORT`` and
``DUMP`` answer the export's client groups and the mounts only to a host
the list admits; anyone else gets an empty list, as ganesha does: export
names and client lists are not for strangers.
"""

from __future__ import annotations

import logging

from merge.namespace import Kind, NamespaceError, NotADirectory
from nfsd.programs.access import AccessControl
from nfsd.programs.handles import HandleCodec
from nfsd.programs.mountlist import MountList
from nfsd.programs.session_mount import is_session_path, mount_session, session_exports
from nfsd.programs.sessions import SessionManager
from nfsd.rpc import CallContext, Procedure, Program, Reply, no_args
from xdr import mount3
from xdr.mount3 import Mount3Packer, Mount3Unpacker

log = logging.getLogger("recovery_fs.mountd")


UDP_DUMP_MAX = 512
"""Bytes of list a DUMP or an EXPORT over UDP answers at most (TCP: all of it).

A forged source gets the reply: a 60-byte call drew 60 KB of mount list,
and 11.5 KB of client groups (192 times the call) with 400 of them.  The
Linux ``showmount`` asks over TCP first, and so gets the whole list."""


def _xdr_string(data: bytes) -> int:
    """Bytes of an XDR string or opaque: its length word and padded bytes."""
    return 4 + (len(data) + 3 & ~3)


def _udp_exports(nodes: list[mount3.exportnode]) -> list[mount3.exportnode]:
    """The rows (and groups) of ``nodes`` that fit in :data:`UDP_DUMP_MAX` bytes,
    in order: a row whose groups do not all fit lists those that do."""
    room, kept = UDP_DUMP_MAX - 4, list[mount3.exportnode]()  # the list's end word
    for node in nodes:
        room -= 4 + _xdr_string(node.ex_dir) + 4  # value follows, dir, groups' end
        if room < 0:
            break
        groups = []
        for g in node.ex_groups:
            room -= 4 + _xdr_string(g)
            if room < 0:
                break
            groups.append(g)
        kept.append(mount3.exportnode(node.ex_dir, groups))
    return kept


def _listed(path: bytes) -> bytes:
    """A mounted path as the mount list holds it: one entry per directory, however
    it was spelled (``/a//b/``), so that a client cannot grow DUMP's answer with
    spellings of one directory."""
    return b"/" + b"/".join(p for p in path.split(b"/") if p)


class MountService:
    """State and procedures of the MOUNT program."""

    def __init__(
        self,
        handles: HandleCodec,
        export_path: str,
        access: AccessControl,
        sessions: SessionManager | None = None,
        mounts: MountList | None = None,
    ) -> None:
        self.handles = handles
        self.sessions = sessions  # instant-recovery sessions: exports of their own
        self.access = access
        self.export_path = export_path.encode()
        self._mounts = mounts if mounts is not None else MountList()  # for DUMP

    def _host(self, ctx: CallContext) -> bytes:
        return ctx.peer.rsplit(":", 1)[0].encode()

    def _presented_path(self, path: bytes) -> tuple[str, ...] | None:
        """The presented path a MNT path names: the export or a folder below it."""
        if not path.startswith(b"/") or b"\0" in path:
            return None  # relative (mountd refuses those too), or no file's name
        parts = [p for p in path.split(b"/") if p]
        export = [p for p in self.export_path.split(b"/") if p]
        if parts[: len(export)] != export or any(p in (b".", b"..") for p in parts):
            return None
        return tuple(p.decode("utf-8", "surrogateescape") for p in parts[len(export) :])

    # RFC 1813 §5.2.0
    def null(self, ctx: CallContext, args: None) -> Reply:
        return Reply([])

    # RFC 1813 §5.2.1
    def mnt(self, ctx: CallContext, path: bytes) -> Reply:
        ctx.note = f"path={path!r}"
        if self.sessions is not None and is_session_path(path):
            return self._mnt_session(ctx, path)
        status, options = self.access.check_mount(ctx)
        presented = self._presented_path(path) if options is not None else None
        if options is not None:
            status = mount3.MNT3ERR_NOENT
        if presented is not None:
            try:
                attrs = self.handles.namespace.getattr(presented)
                status = mount3.MNT3_OK if attrs.kind == Kind.DIR else mount3.MNT3ERR_NOTDIR
            except NotADirectory:
                status = mount3.MNT3ERR_NOTDIR
            except NamespaceError:
                status = mount3.MNT3ERR_NOENT
        if status != mount3.MNT3_OK:
            return self._answer(ctx, path, status)
        assert presented is not None and options is not None
        fh = self.handles.encode(presented, attrs.fileid)
        return self._answer(ctx, path, status, fh, list(self.access.flavors(options)))

    def _mnt_session(self, ctx: CallContext, path: bytes) -> Reply:
        assert self.sessions is not None
        status, fh, flavors = mount_session(self.sessions, self.access, ctx, path)
        return self._answer(ctx, path, status, fh, flavors)

    def _answer(
        self,
        ctx: CallContext,
        path: bytes,
        status: int,
        fh: bytes = b"",
        flavors: list[int] | None = None,
    ) -> Reply:
        """MNT's reply: a refusal (logged), or the handle, with the mount listed for DUMP."""
        p = Mount3Packer()
        if status != mount3.MNT3_OK:
            ctx.status = status
            log.info("MNT of %r from %s refused: status %d", path, ctx.peer, status)
            p.pack_mountres3(mount3.mountres3(status))
            return Reply([p.get_buffer()])
        self._mounts.add(self._host(ctx), _listed(path))
        log.info("MNT %s from %s", path.decode(errors="replace"), ctx.peer)
        p.pack_mountres3(mount3.mountres3(mount3.MNT3_OK, mount3.mountres3_ok(fh, flavors or [])))
        return Reply([p.get_buffer()])

    # RFC 1813 §5.2.2
    def dump(self, ctx: CallContext, args: None) -> Reply:
        mounts = []
        if self.access.admits(ctx):
            mounts = [mount3.mountbody(h, d) for h, d in self._mounts.entries()]
        if ctx.transport == "udp":
            # A forged source would have a long list reflected at it: over UDP
            # the list stops at UDP_DUMP_MAX bytes.
            room, kept = UDP_DUMP_MAX, []
            for m in mounts:
                room -= 20 + len(m.ml_hostname) + len(m.ml_directory)  # XDR, padded
                if room < 0:
                    break
                kept.append(m)
            mounts = kept
        p = Mount3Packer()
        p.pack_mountlist(mounts)
        return Reply([p.get_buffer()])

    # RFC 1813 §5.2.3
    def umnt(self, ctx: CallContext, path: bytes) -> Reply:
        self._mounts.remove(self._host(ctx), _listed(path))
        return Reply([])

    # RFC 1813 §5.2.4
    def umntall(self, ctx: CallContext, args: None) -> Reply:
        self._mounts.remove_host(self._host(ctx))
        return Reply([])

    # RFC 1813 §5.2.5
    def export(self, ctx: CallContext, args: None) -> Reply:
        nodes = []
        export = self.access.table.get(self.access.export_path)
        if export is not None and self.access.admits(ctx):
            groups = [c.text.encode() for c in export.clients]
            nodes.append(mount3.exportnode(self.export_path, groups))
        if self.sessions is not None:
            nodes += session_exports(self.sessions, self.access, ctx)
        if ctx.transport == "udp":
            nodes = _udp_exports(nodes)
        p = Mount3Packer()
        p.pack_exports(nodes)
        return Reply([p.get_buffer()])

    def program(self) -> Program:
        """The procedure table: every MOUNT v3 procedure, by number."""
        return Program(
            number=mount3.MOUNT_PROGRAM,
            name="MOUNT",
            unpacker=Mount3Unpacker,
            versions={
                3: {
                    mount3.MOUNTPROC3_NULL: Procedure("MNT3_NULL", no_args, self.null),
                    mount3.MOUNTPROC3_MNT: Procedure(
                        "MNT", Mount3Unpacker.unpack_dirpath, self.mnt
                    ),
                    mount3.MOUNTPROC3_DUMP: Procedure("DUMP", no_args, self.dump),
                    mount3.MOUNTPROC3_UMNT: Procedure(
                        "UMNT", Mount3Unpacker.unpack_dirpath, self.umnt
                    ),
                    mount3.MOUNTPROC3_UMNTALL: Procedure("UMNTALL", no_args, self.umntall),
                    mount3.MOUNTPROC3_EXPORT: Procedure("EXPORT", no_args, self.export),
                }
            },
        )
