"""The installation secret: where it is read from, and how it is shared.

Design notes
------------
Everything a client keeps from the server is derived from the storage and
the secret alone: a file handle (``nfsd.programs.handles``: the entry's
fileid, hashes of its path, an HMAC keyed by the secret), a fileid (a
hash of the presented path, ``merge.attrs.fileid_for``: not an inode
number, so a CIFS import's client-made inode numbers do not matter), the
READDIR cookie verifier
(``Nfs3Service.cookieverf``: the secret's first bytes) and the cookies
(positions in the listing, which is sorted).  Nothing comes from a boot
time, a PID or a counter.  So servers on several hosts over the same
storage, given the same secret, are interchangeable: a client moved from
one to another by a balancer carries on with the handles it holds.

The secret is the state directory's ``secret`` file (created on first use),
unless ``secret-file`` names another (read only, never created: a missing
file is a configuration error, not a new key that would silently make
every handle stale).  On disk it is 32 raw bytes; ``recovery-fs secret
show`` prints it as 64 hex digits, and ``recovery-fs secret install FILE``
takes either form, so that the secret can be copied as text between hosts.
"""

from __future__ import annotations

import binascii
from pathlib import Path

from nfsd.service.config import ConfigError
from nfsd.service.state import SECRET_BYTES, StateDir, StateError, atomic_write


def parse_secret(data: bytes, where: object) -> bytes:
    """32 bytes, given raw or as 64 hex digits (whitespace around ignored)."""
    if len(data) == SECRET_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * SECRET_BYTES:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            pass
    raise ConfigError(
        f"{where}: not a secret (32 raw bytes, or 64 hex digits as `recovery-fs secret show` "
        f"prints); it holds {len(data)} bytes"
    )


def read_secret_file(path: Path) -> bytes:
    """The secret of a ``secret-file``; ConfigError if missing or malformed."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the secret file {path}: {e.strerror}") from e
    return parse_secret(data, path)


def load_secret(secret_file: Path | None, state: StateDir) -> bytes:
    """The key of the handles: ``secret_file``'s, else the state directory's."""
    if secret_file is not None:
        return read_secret_file(secret_file)
    return state.secret()


def install_secret(source: Path, state: StateDir) -> bytes:
    """Copy ``source``'s secret into the state directory (0600), replacing it."""
    secret = read_secret_file(source)
    state.ensure()
    try:
        atomic_write(state.secret_path, secret, mode=0o600)
    except OSError as e:
        raise StateError(f"cannot write {state.secret_path}: {e.strerror}") from e
    return secret


def show(secret: bytes) -> str:
    """The secret as ``secret show`` prints it: 64 hex digits."""
    return secret.hex()


def fingerprint(secret: bytes) -> str:
    """A short, non-secret name of the secret, to compare hosts in ``status``."""
    import hashlib  # noqa: PLC0415  (OpenSSL's libcrypto: 3.7 MB of a supervisor that never needs it)

    return hashlib.sha256(b"recovery-fs secret\0" + secret).hexdigest()[:16]
