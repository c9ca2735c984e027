"""Run inside a private network namespace: what port 111 and ``showmount`` see.

``tests/e2e/test_access.py`` starts this module under
``unshare --net --mount --pid --fork --kill-child`` with a spec file
(``storage``, ``work``, ``args`` of ``serve``).  Inside, ``lo`` comes up, then
``recovery-fs serve`` *with* its own portmapper on port 111 (nothing else
can hold 111 in a fresh namespace), and the probes run:

* MNT from 127.0.0.1 (port < 1024) and 127.0.0.2, so that DUMP has entries;
* ``showmount -e`` and ``showmount -a`` (Debian nfs-common), which find
  MOUNT through the portmapper;
* EXPORT and DUMP with ``rpcwire`` over TCP and UDP, from an admitted host
  and from 127.0.0.3 (not admitted);
* the portmapper over UDP: DUMP, CALLIT, BCAST, INDIRECT and GETSTAT of each
  version, with the size of the call and of the reply (or none).

Everything seen goes to ``WORK/probe.json`` for the tests to judge; the
server is stopped by its PID, and the namespace dies with this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.kernel import netns
from tests.e2e.support import rpcwire as w
from tests.e2e.support.server import Server, ping

PORT = 20490
EXPORT = b"/recover/images"


def _run(argv: list[str]) -> dict:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired as e:
        return {"rc": None, "stdout": str(e.stdout), "stderr": "timed out after 30 s"}
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def _mount_program(source: str, transport: str, proc: int) -> list:
    with w.Client(("127.0.0.1", PORT), source, udp=transport == "udp", reserved=True) as c:
        r = c.call(w.MOUNT_PROGRAM, 3, proc)
    if not r.ok:
        return [f"RPC error: accepted={r.accepted} stat={r.accept_stat}"]
    if proc == w.EXPORT:
        return [[d, g] for d, g in w.exports(r.body)]
    return [list(m) for m in w.mountlist(r.body)]


# (what, version, procedure, arguments): the calls that could amplify
_FORWARD = w.u32(w.NFS_PROGRAM) + w.u32(3) + w.u32(0) + w.opaque(b"")
PORTMAP_UDP = [
    ("v2 DUMP", 2, 4, b""),
    ("v2 CALLIT", 2, 5, _FORWARD),
    ("v3 DUMP", 3, 4, b""),
    ("v3 CALLIT", 3, 5, _FORWARD),
    ("v4 DUMP", 4, 4, b""),
    ("v4 BCAST", 4, 5, _FORWARD),
    ("v4 INDIRECT", 4, 10, _FORWARD),
    ("v4 GETSTAT", 4, 12, b""),
]


FORWARDS = ("CALLIT", "BCAST", "INDIRECT")


def _portmap_udp() -> list[dict]:
    out = []
    for what, vers, proc, args in PORTMAP_UDP:
        with w.Client(("127.0.0.1", 111), "127.0.0.2", udp=True, timeout=0.5) as c:
            xid = c.send(w.PORTMAP_PROGRAM, vers, proc, args, None)
            call = len(w.call_record(xid, w.PORTMAP_PROGRAM, vers, proc, args))
            try:
                raw = c.receive()
            except TimeoutError:
                raw = None
        reply = w.Reply.parse(raw) if raw else None
        out.append(
            {
                "what": what,
                "call": call,
                "reply": None if raw is None else len(raw),
                "accept_stat": reply.accept_stat if reply else None,
                "forwarded": bool(reply and reply.ok and what.endswith(FORWARDS) and reply.body),
            }
        )
    return out


def _portmap_tcp_dump() -> bool:
    with w.Client(("127.0.0.1", 111), "127.0.0.2") as c:
        r = c.call(w.PORTMAP_PROGRAM, 2, 4)
    return r.ok and len(r.body) > 4


def probe(spec: dict) -> dict:
    work = Path(spec["work"])
    try:
        srv = Server(
            Path(spec["storage"]),
            work / "server",
            port=PORT,
            portmap=True,
            args=tuple(spec["args"]),
        )
    except (RuntimeError, TimeoutError) as e:
        out = (work / "server" / "recovery-fs.out").read_text(errors="replace")
        raise RuntimeError(f"{e}\n{out}") from e
    seen: dict = {}
    try:
        deadline = time.monotonic() + 20
        while not ping("127.0.0.1", 111, program=w.PORTMAP_PROGRAM):
            if time.monotonic() > deadline:
                raise TimeoutError("no portmapper on 111\n" + srv.diagnostics())
            time.sleep(0.05)
        for source, reserved in (("127.0.0.1", True), ("127.0.0.2", False)):
            with w.Client(("127.0.0.1", PORT), source, reserved=reserved) as c:
                seen[f"MNT {source}"] = c.mount()[0]
        seen["showmount -e"] = _run(["showmount", "-e", "127.0.0.1"])
        seen["showmount -a"] = _run(["showmount", "-a", "127.0.0.1"])
        for transport in ("tcp", "udp"):
            for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
                seen[f"EXPORT {transport} {source}"] = _mount_program(source, transport, w.EXPORT)
                seen[f"DUMP {transport} {source}"] = _mount_program(source, transport, w.DUMP)
        seen["portmap udp"] = _portmap_udp()
        seen["portmap tcp DUMP ok"] = _portmap_tcp_dump()
        seen["server alive"] = srv.alive()
        seen["server log"] = srv.diagnostics()[-3000:]
    finally:
        srv.stop()
    return seen


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    netns.setup()
    seen = probe(spec)
    (Path(spec["work"]) / "probe.json").write_text(json.dumps(seen, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
