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

from nfsd.service.config import Config, ConfigError
from nfsd.transport.tls import ContextSource, TlsConfigError, TlsSettings


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


def tls_source(cfg: Config) -> ContextSource | None:
    """The context source of every listener, or None without TLS; ConfigError if unusable."""
    settings = tls_settings(cfg)
    if settings is None:
        return None
    try:
        return ContextSource(settings)
    except TlsConfigError as e:
        raise ConfigError(f"TLS: {e}") from e


def describe(cfg: Config) -> str:
    """One phrase for the start-up line and ``status``."""
    if cfg.tls_cert is None:
        return "off"
    return "tls and mtls" if cfg.tls_client_ca is not None else "tls"
