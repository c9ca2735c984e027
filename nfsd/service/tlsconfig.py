"""The server's TLS settings (``--tls-cert``, ``--tls-key``, ``--tls-client-ca``) made usable.

Design notes
------------
RPC-with-TLS is offered when a certificate and its key are configured;
``--tls-client-ca`` adds client certificates (``mtls``).  Every file is
loaded once here, at start: a missing or unreadable file, a key that does
not match its certificate, a client CA without a certificate, stop the
start with a :class:`~nfsd.service.config.ConfigError` naming the file.
Later changes of the files on disk are picked up by the
:class:`~nfsd.transport.tls.ContextSource` for new connections (a set that
does not load then keeps the previous one, and is logged).

The same source serves the NFS port (MOUNT and NFS) and the portmapper the
server runs itself: a client may ask any of them for TLS.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

from nfsd.service.config import Config, ConfigError
from nfsd.service.state import atomic_write
from nfsd.transport.tls import (
    ContextSource,
    TlsConfigError,
    TlsSettings,
    file_signature,
    server_context,
)

log = logging.getLogger("recovery_fs.tls")

LOADED_DIR = "tls-loaded"
"""State directory: copies of the TLS files the server last loaded (:class:`Loaded`)."""
_NAMES = ("cert.pem", "key.pem", "client-ca.pem")


def tls_settings(cfg: Config) -> TlsSettings | None:
    """The configured files, or None when TLS is not configured."""
    if cfg.tls_cert is None and cfg.tls_key is None:
        if cfg.tls_client_ca is not None:
            raise ConfigError("tls-client-ca needs tls-cert and tls-key (the server's own)")
        return None
    if cfg.tls_cert is None or cfg.tls_key is None:
        given, missing = ("tls-cert", "tls-key") if cfg.tls_key is None else ("tls-key", "tls-cert")
        raise ConfigError(f"{given} is given without {missing}")
    return TlsSettings(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)


def tls_source(cfg: Config, loaded: Path | None = None) -> ContextSource | None:
    """The context source of every listener, or None without TLS; ConfigError if
    unusable.  ``loaded``: a copy :class:`Loaded` made, used if the files are not."""
    settings = tls_settings(cfg)
    if settings is None:
        return None
    try:
        return ContextSource(settings, fallback=_copied(settings, loaded) if loaded else None)
    except TlsConfigError as e:
        raise ConfigError(f"TLS: {e}") from e


def _copied(settings: TlsSettings, folder: Path) -> TlsSettings:
    """``settings`` with its files replaced by their copies in ``folder``."""
    cert, key, ca = (folder / n for n in _NAMES)
    return dataclasses.replace(
        settings, cert=cert, key=key, client_ca=ca if settings.client_ca else None
    )


class Loaded:
    """The supervisor's copy of the TLS files that last loaded, for the workers it starts.

    A worker builds its context when it starts (and a spare when it is
    promoted), long after the server did: files broken on disk since (a new
    key before its certificate, a bad deploy) would stop every replacement
    of a worker that died, while the running ones keep their context, and
    with every worker gone the port with them, plain clients too.  So the
    supervisor copies the files (private: the folder 0700, the files 0600, in
    the state directory beside the server's secret), checks that the copy
    loads, and tells each worker it starts where the copy is
    (:func:`tls_source`'s ``loaded``).  It takes a new copy once the files on
    disk change and load (:meth:`refresh`); one that does not load keeps the
    copy in force, as the workers' own reloads keep their context.  Each copy
    is a new folder, the previous one removed: a worker reads the folder its
    spec names, never one being written.
    """

    def __init__(self, settings: TlsSettings, state: Path) -> None:
        self.settings = settings
        self.root = state / LOADED_DIR
        self.current: Path | None = None
        self._sig: tuple | None = None

    def take(self) -> None:
        """Copy the files and check the copy loads; TlsConfigError (nothing kept) if not."""
        sig = file_signature(self.settings.files())
        folder: Path | None = None
        try:
            self.root.mkdir(mode=0o700, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="set-", dir=self.root))
            for src, name in zip(self.settings.files(), _NAMES, strict=False):
                try:
                    data = src.read_bytes()
                except OSError as e:
                    raise TlsConfigError(f"{src}: {e.strerror}") from e
                atomic_write(folder / name, data, mode=0o600)
            server_context(_copied(self.settings, folder))
        except BaseException:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            self._sig = sig  # not tried again before the files change
            raise
        old, self.current, self._sig = self.current, folder, sig
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def refresh(self) -> None:
        """A new copy if the files changed since the last look and load now."""
        if file_signature(self.settings.files()) == self._sig:
            return
        try:
            self.take()
        except TlsConfigError as e:
            log.debug("TLS files changed but do not load; the workers keep the copy: %s", e)
        except OSError as e:  # the state directory's, not the files': the copy in force stays
            log.warning("cannot copy the TLS files into %s: %s", self.root, e)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.current = None


def describe(cfg: Config) -> str:
    """One phrase for the start-up line and ``status``."""
    if cfg.tls_cert is None:
        return "off"
    return "tls and mtls" if cfg.tls_client_ca is not None else "tls"
