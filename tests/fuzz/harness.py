"""The sans-IO path under test: bytes -> records -> dispatch -> checked replies.

Design notes
------------
One :class:`Harness` per process: the demo storage (``merge.demo``: plain
files, merged images with pancbt, SmartMotion links, folders) built once in
a temporary folder, the real namespace over it, an instant-recovery session
of two of its folders (``/recover/instant/fz``, its overlay in the same
temporary folder, a quota of :data:`SESSION_QUOTA`), and one dispatcher
holding the real MOUNT, NFS and portmapper programs, the session's exports
routed as the server routes them.  The secret and the session's key are
fixed, so the handles kept in ``tests/fuzz/corpus`` resolve.  The session
changes as inputs run (a REMOVE removes, a WRITE writes): an input may find
what an earlier one left, as a server does.

An input is one byte of *mode*, then what the peer sends:

====  ==========================================================================
bits  meaning
====  ==========================================================================
0     0: a TCP stream (record marking, ``nfsd.transport.record``); 1: one UDP datagram
1     dispatch inline first (a procedure may raise WouldBlock, then a worker
      serves the same call, as the transport does)
2-3   the peer: allowed (``127.0.0.1:900``), insecure port, not in the list
4-7   0: the stream fed at once; n: fed in chunks of 2^(n-1) bytes
====  ==========================================================================

Invariants checked on every input (:class:`Broken` when one fails):

* the only exception that leaves the path is ``RecordTooLarge`` (the
  transport closes the connection); the reader never holds more than one
  record's worth of bytes;
* a call whose RPC header decodes gets a reply (a UDP one may be withheld,
  never a TCP one), with the call's xid, no larger than :data:`MAX_REPLY`,
  that decodes completely: the RPC reply header and, on SUCCESS, the
  procedure's result type with no byte left over;
* no NFS3ERR_SERVERFAULT, and nothing logged at ERROR (the dispatcher logs
  an unexpected exception there before it answers SERVERFAULT/SYSTEM_ERR);
* every pooled READ buffer handed out comes back;
* a session's deferred reply (WRITE: answered once its group commits) comes
  within :data:`SETTLE_SECONDS`;
* the C parser of the fast path (``nfsd._fastcall.parse_call``, when built)
  reads every record as its pure-Python twin does.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from instant.sessions import SessionRegistry, create_session
from merge.demo import make_demo
from merge.stack import build_namespace
from nfsd.native import compiled
from nfsd.programs.build import build_programs
from nfsd.programs.nfs3.fastpath import parse_call_py
from nfsd.programs.nfs3.service import RTMAX
from nfsd.programs.portmap import build_portmap
from nfsd.programs.sessions import SessionManager
from nfsd.rpc import Dispatcher, Reply, WouldBlock
from nfsd.transport.record import DEFAULT_MAX_RECORD, RecordReader, RecordTooLarge
from tests.proto.nfsclient import Caller
from xdr import mount3, nfs3, rpc
from xdr import portmap as pm
from xdr.base import Unpacker, XdrError
from xdr.mount3 import Mount3Unpacker
from xdr.nfs3 import NFS3Unpacker
from xdr.portmap import PortmapUnpacker

SECRET = b"recovery-fs fuzz corpus secret!!"
PEERS = ("127.0.0.1:900", "127.0.0.1:40000", "192.0.2.7:900", "127.0.0.1:900")
MAX_REPLY = RTMAX + 4096  # the largest READ, with every header
MAX_PENDING = DEFAULT_MAX_RECORD + 4  # one record's bytes and a header
SESSION = "fz"
SESSION_KEY = "f022f022f022f022"  # the session handles' key: fixed, as the secret
SESSION_ROOTS = {"web01": ("latest", "web01"), "problems": ("problems",)}
SESSION_CLIENTS = "127.0.0.1 ::1"  # rw,no_root_squash; a privileged port (PEERS[1] is not)
SESSION_QUOTA = 64 << 20
SETTLE_SECONDS = 30


class Broken(AssertionError):
    """An invariant of the sans-IO path does not hold for this input."""


def _void(u: Unpacker) -> None:
    return None


def _nfs(name: str) -> Callable[[Unpacker], Any]:
    return getattr(NFS3Unpacker, f"unpack_{name}3res")


# NFSv3 procedures 1 to 21, in order (RFC 1813 §3.3)
_NFS_NAMES = [
    *("GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ", "WRITE", "CREATE"),
    *("MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR", "RENAME", "LINK", "READDIR"),
    *("READDIRPLUS", "FSSTAT", "FSINFO", "PATHCONF", "COMMIT"),
]
_RPCB3 = {
    0: _void,
    1: PortmapUnpacker.unpack_bool,
    2: PortmapUnpacker.unpack_bool,
    3: PortmapUnpacker.unpack_string,
    4: PortmapUnpacker.unpack_rpcblist,
    6: PortmapUnpacker.unpack_uint,
}
# (program, version) -> procedure -> (unpacker class, result decoder)
RESULTS: dict[tuple[int, int], tuple[type[Unpacker], dict[int, Callable[[Any], Any]]]] = {
    (nfs3.NFS_PROGRAM, 3): (
        NFS3Unpacker,
        {0: _void} | {i + 1: _nfs(n) for i, n in enumerate(_NFS_NAMES)},
    ),
    (mount3.MOUNT_PROGRAM, 3): (
        Mount3Unpacker,
        {
            0: _void,
            1: Mount3Unpacker.unpack_mountres3,
            2: Mount3Unpacker.unpack_mountlist,
            3: _void,
            4: _void,
            5: Mount3Unpacker.unpack_exports,
        },
    ),
    (pm.PMAP_PROG, pm.PMAP_VERS): (
        PortmapUnpacker,
        {
            0: _void,
            1: PortmapUnpacker.unpack_bool,
            2: PortmapUnpacker.unpack_bool,
            3: PortmapUnpacker.unpack_uint,
            4: PortmapUnpacker.unpack_pmaplist,
        },
    ),
    (pm.PMAP_PROG, pm.RPCBVERS): (PortmapUnpacker, _RPCB3),
    (pm.PMAP_PROG, pm.RPCBVERS4): (
        PortmapUnpacker,
        _RPCB3 | {9: PortmapUnpacker.unpack_string, 11: PortmapUnpacker.unpack_rpcb_entry_list},
    ),
}
AUTH_STATS = frozenset(range(rpc.AUTH_OK, rpc.AUTH_FAILED + 1))


class _Errors(logging.Handler):
    """Keeps what the server logs at ERROR: each one is a bug the reply hid."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


class Harness:
    """The demo storage, the real programs, and the checks of every reply."""

    def __init__(self, *, quiet: bool = False) -> None:
        """``quiet`` (the fuzzer's own run) keeps the server's logger at ERROR
        for speed; tests leave the levels alone (other tests share the logger)."""
        self._tmp = tempfile.mkdtemp(prefix="recovery-fs-fuzz-")
        atexit.register(shutil.rmtree, self._tmp, True)
        self.storage = Path(self._tmp) / "storage"
        make_demo(self.storage)
        self.namespace = build_namespace(str(self.storage))
        self.registry = SessionRegistry(Path(self._tmp) / "state")
        with mock.patch("instant.sessions.new_key", return_value=SESSION_KEY):
            create_session(
                self.registry, self.namespace, SESSION, SESSION_ROOTS,
                clients=SESSION_CLIENTS, quota=SESSION_QUOTA,
            )  # fmt: skip
        self.sessions = SessionManager(self.registry, self.namespace, SECRET)
        self.caller = Caller(self.namespace, SECRET)
        programs = build_programs(
            self.namespace, SECRET, self.caller.access, udp=True, sessions=self.sessions
        )
        self.caller.dispatcher = Dispatcher(programs)  # the seeds' handles: this server's
        portmap = build_portmap(programs, "127.0.0.1", 2049, 111)
        self.dispatcher = Dispatcher([*programs, portmap])
        self.errors = _Errors()
        server_log = logging.getLogger("recovery_fs")
        self._saved_log = (server_log.level, server_log.propagate)
        server_log.addHandler(self.errors)
        if quiet:
            server_log.setLevel(logging.ERROR)
            server_log.propagate = False
        self.out = 0  # READ buffers handed out and not yet back

    def close(self) -> None:
        """Close the session, give the server's logger back as it was (other tests
        share the process)."""
        self.sessions.close()
        server_log = logging.getLogger("recovery_fs")
        server_log.removeHandler(self.errors)
        server_log.setLevel(self._saved_log[0])
        server_log.propagate = self._saved_log[1]

    # -- one input ------------------------------------------------------
    def one_input(self, data: bytes) -> None:
        """Run one input (mode byte, then the peer's bytes); raise Broken if wrong."""
        if not data:
            return
        mode, stream = data[0], data[1:]
        transport = "udp" if mode & 1 else "tcp"
        inline = bool(mode & 2)
        peer = PEERS[(mode >> 2) & 3]
        self.errors.records.clear()
        if transport == "udp":
            self.serve(stream, peer, transport, inline)
        else:
            chunk = 1 << ((mode >> 4) - 1) if mode >> 4 else max(len(stream), 1)
            reader = RecordReader()
            for at in range(0, len(stream), chunk):
                try:
                    records = reader.feed(stream[at : at + chunk])
                except RecordTooLarge:
                    return  # the transport closes the connection
                if reader.pending > MAX_PENDING:
                    raise Broken(f"the reader holds {reader.pending} bytes")
                for record in records:
                    self.serve(record, peer, transport, inline)
        if self.errors.records:
            raise Broken("logged at ERROR:\n" + "\n".join(self.errors.records))

    def serve(self, record: bytes, peer: str, transport: str, inline: bool) -> bytes | None:
        """Dispatch one record as the transport does; check and return the reply bytes."""
        if compiled is not None and type(record) is bytes:
            got, want = compiled.parse_call(record), parse_call_py(record)
            if got != want:
                raise Broken(f"nfsd._fastcall.parse_call: {got!r}, its twin: {want!r}")
        try:
            reply = self.dispatcher.dispatch(record, peer, transport, inline=inline)
        except WouldBlock:
            if not inline:
                raise Broken("WouldBlock from a call not served inline") from None
            reply = self.dispatcher.dispatch(record, peer, transport)
        if reply is not None and reply.later is not None:
            reply = _settled(reply)
        if reply is None:
            data = None
        else:
            data = b"".join(bytes(p) for p in reply.parts)
            reply.free()
        check_reply(record, data, transport)
        return data


def _settled(reply: Reply) -> Reply | None:
    """A deferred reply once it came (None: dropped); Broken if it does not come."""
    assert reply.later is not None
    try:
        done = reply.later.wait(SETTLE_SECONDS)
    except TimeoutError:
        raise Broken(f"a deferred reply did not come within {SETTLE_SECONDS} s") from None
    return None if done is None or done.dropped else done


def check_reply(record: bytes, data: bytes | None, transport: str) -> None:
    """Raise Broken unless ``data`` is a right answer, in form, to ``record``."""
    try:
        xid, mtype, call, _ = rpc.decode_call(record)
    except rpc.BadAuthLength as e:
        want = struct.pack(">IIIII", e.xid, rpc.REPLY, rpc.MSG_DENIED, rpc.AUTH_ERROR, e.stat)
        if data != want:
            raise Broken(f"not AUTH_ERROR {e.stat} to an oversized credential") from None
        return
    except XdrError:
        if data is not None:
            raise Broken("a reply to an undecodable header") from None
        return
    if data is None:
        if mtype == rpc.CALL and transport == "tcp":
            raise Broken("no reply to a call over TCP")
        return
    if mtype != rpc.CALL:
        raise Broken("a reply to a message that is not a call")
    if len(data) > MAX_REPLY:
        raise Broken(f"reply of {len(data)} bytes")
    try:
        _check_body(xid, call, data)
    except XdrError as e:
        raise Broken(f"malformed reply: {e}: {data[:64].hex()}") from e


def _check_body(xid: int, call: rpc.call_body, data: bytes) -> None:
    u = rpc.RpcUnpacker(data)
    got_xid, reply_stat, stat = u.unpack_reply_header()
    if got_xid != xid:
        raise Broken(f"reply xid {got_xid:#x} to call {xid:#x}")
    if reply_stat == rpc.MSG_DENIED:
        if stat == rpc.RPC_MISMATCH:
            if (u.unpack_uint(), u.unpack_uint()) != (2, 2):
                raise Broken("RPC_MISMATCH not naming version 2")
        elif stat != rpc.AUTH_ERROR or u.unpack_enum() not in AUTH_STATS:
            raise Broken(f"rejected reply with reject_stat {stat}")
    elif reply_stat != rpc.MSG_ACCEPTED:
        raise Broken(f"reply_stat {reply_stat}")
    elif stat == rpc.PROG_MISMATCH:
        low, high = u.unpack_uint(), u.unpack_uint()
        if low > high:
            raise Broken(f"PROG_MISMATCH ({low}, {high})")
    elif stat == rpc.SUCCESS:
        u = _check_result(call, data[u.get_position() :])
    elif stat not in (rpc.PROG_UNAVAIL, rpc.PROC_UNAVAIL, rpc.GARBAGE_ARGS, rpc.SYSTEM_ERR):
        raise Broken(f"accept_stat {stat}")
    u.done()


def _check_result(call: rpc.call_body, body: bytes) -> Unpacker:
    found = RESULTS.get((call.prog, call.vers))
    decode = found[1].get(call.proc) if found else None
    if found is None or decode is None:
        raise Broken(f"SUCCESS for {call.prog} v{call.vers} proc {call.proc}")
    u = found[0](body)
    result = decode(u)
    if call.prog == nfs3.NFS_PROGRAM and getattr(result, "status", 0) == nfs3.NFS3ERR_SERVERFAULT:
        raise Broken("NFS3ERR_SERVERFAULT")
    return u
