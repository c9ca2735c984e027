"""A private network, mount and PID namespace for the servers under test and QEMU.

`wrap(argv)` returns the command that runs `argv` inside
`unshare --net --mount --pid --fork --kill-child`; the wrapped program calls
`setup()` first. Inside, `lo` is up with 127.0.0.2/8 and ::127.0.0.2/128 added
(glibc ignores plain loopback addresses otherwise), and `/run` is a private
tmpfs (rpcbind's socket). The guest's user networking reaches that loopback
as 10.0.2.2 and nothing else; ports cannot clash with the host's, and every
process dies with the namespace when the wrapped program ends or `unshare` is
killed.
"""

from __future__ import annotations

import shutil
import subprocess


class NamespaceError(RuntimeError):
    pass


def wrap(argv: list[str]) -> list[str]:
    unshare = shutil.which("unshare")
    if not unshare:
        raise NamespaceError("unshare (util-linux) is not installed")
    return [unshare, "--net", "--mount", "--pid", "--fork", "--kill-child", *argv]


def setup() -> None:
    """Call once, inside the namespace, before starting anything."""
    cmds = [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", "127.0.0.2/8", "dev", "lo"],
        ["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"],
    ]
    for cmd in cmds:
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except FileNotFoundError as e:
            raise NamespaceError(f"{cmd[0]} is not installed (iproute2, util-linux)") from e
        except subprocess.CalledProcessError as e:
            raise NamespaceError(f"{' '.join(cmd)}: {e.stderr.strip()}") from e
    # IPv6 may be disabled on the machine; the guest only uses IPv4.
    subprocess.run(
        ["ip", "-6", "addr", "add", "::127.0.0.2/128", "dev", "lo"],
        capture_output=True,
        check=False,
    )
