"""The kernel client over RPC-with-TLS against the real server, in one guest boot.

The guest is Debian 13's (kernel 6.12, tlshd from ktls-utils: ``assets_tls``);
the server is ``recovery-fs serve`` with ``--tls-cert/--tls-key/--tls-client-ca``
from ``recovery-fs tls init`` (its certificate names 10.0.2.2, the address
the guest mounts: tlshd checks it).  The export admits the guest's
certificate name with ``xprtsec=mtls`` and its address (QEMU's NAT) with
``xprtsec=tls`` only, so the one boot shows all three policies:

* ``xprtsec=tls``: MNT in clear, NFS inside TLS, by address;
* ``xprtsec=mtls``: the certificate ``guest.example`` is the client;
* no TLS: MNT is answered, every NFS call refused (``NFS3ERR_ACCES``), the
  mount fails with "Permission denied".
"""

from __future__ import annotations

import dataclasses
import json

from nfsd.cli.tls import init as tls_init

from . import assets_tls, guest, servers
from .scenarios import (
    EXPORT,
    PORT,
    SMALL_CHECK_PATHS,
    TIMEOUT_SCALE,
    Env,
    Run,
    _checks_file,
    _mount_refusal_problems,
    explicit_mount_options,
)
from .storage import Check

MODES = ("tls", "mtls")
CLIENT = "guest.example"
EXPORTS = (
    "# the guest's certificate over mutual TLS; its address (QEMU's NAT) over TLS only\n"
    f"{EXPORT} {CLIENT}(insecure,xprtsec=mtls) 127.0.0.1(insecure,xprtsec=tls)\n"
)


def run_tls(env: Env) -> Run:
    """One boot: tls, mtls, then a plain mount that must be refused."""
    boot = assets_tls.prepare().boot
    run_dir = env.work / "tls"
    pki = run_dir / "pki"
    tls_init(pki, ["localhost"], [guest.GUEST_HOST_ADDR, "127.0.0.1"], [CLIENT])
    cfg = servers.ServerConfig(
        kind=env.kind,
        storage=str(env.exported),
        workdir=str(run_dir / "server"),
        port=PORT,
        exports=EXPORTS,
        tls_dir=str(pki),
    )
    server = servers.make(cfg)
    base = env.layout.checks(paths=SMALL_CHECK_PATHS)
    checks: list[Check] = []
    data = {
        "ca.pem": (pki / "ca.pem").read_bytes(),
        "client.pem": (pki / "clients" / f"{CLIENT}.pem").read_bytes(),
        "client.key": (pki / "clients" / f"{CLIENT}.key").read_bytes(),
    }
    for mode in MODES:
        mine = [dataclasses.replace(c, id=f"{mode}-{c.id}", group=mode) for c in base]
        data[f"checks_{mode}.txt"] = _checks_file(mine)
        checks += mine
    params: dict[str, str | int] = {
        "SERVER": guest.GUEST_HOST_ADDR,
        "EXPORT": EXPORT,
        "MOUNT_OPTS": explicit_mount_options(server),
        "MOUNT_TIMEOUT": 60,
        "MODES": " ".join(MODES),
    }
    result = guest.run_guest(
        scenario="tls",
        server=cfg,
        run_dir=run_dir,
        params=params,
        data=data,
        timeout=300 * TIMEOUT_SCALE,
        kernel_assets=boot,
    )
    return Run("tls", result, server, checks)


def mounted_problems(run: Run, mode: str) -> list[str]:
    """The ``xprtsec=mode`` mount happened, with that option in force, and was undone."""
    r = run.result
    opts = [v for v in r.values("MOUNTINFO") if f"xprtsec={mode}," in v]
    problems = [] if opts else [f"no mount with xprtsec={mode}: MOUNT {r.values('MOUNT')}"]
    umount = [v.strip() for v in r.values("UMOUNT") if v.startswith(f"{mode} ")]
    if umount != [f"{mode} rc=0"]:
        problems.append(f"umount after xprtsec={mode}: {umount}")
    return problems + [f"guest: {e}" for e in r.values("ERROR")]


def plain_refused_problems(run: Run) -> list[str]:
    return _mount_refusal_problems("mount without TLS", run.result.one("TLS_PLAIN"))


def server_log(run: Run) -> str:
    """The server's log (TLS handshakes at level 1 are not logged by default: refusals are)."""
    return "\n".join(p.read_text(errors="replace") for p in run.server.log_files() if p.exists())


def summary(run: Run) -> str:
    """What the boot took, for the report."""
    return json.dumps({"wall_s": round(run.result.wall_s, 1), "run_dir": str(run.result.run_dir)})
