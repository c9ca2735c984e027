"""The server's settings: defaults, then the config file, then the command line.

Design notes
------------
Every setting has one name, used alike as the INI key (section ``[server]``,
``-`` or ``_`` in the key), the ``Config`` field, and the long option:

=============  ==========================  =================================
key            default                     meaning
=============  ==========================  =================================
``storage``    ``/storage``                the storage directory (read only)
``bind``       ``0.0.0.0``                 address to listen on (``::`` too)
``port``       ``2049``                    NFS and MOUNT, TCP and UDP (0: any)
``portmap``    ``yes``                     register with, or be, the portmapper
``state-dir``  ``/var/lib/recovery_fs``    secret, pid, status, registry
``log-file``   ``/var/log/recovery_fs``    log file (a directory: a file in it)
``exports``    ``/etc/recovery_fs/exports``  who may mount (exports(5) syntax);
                                           absent: loopback only
``udp``        ``no``                      NFS over UDP too (MOUNT always)
``tls-cert``   (none)                      the server's certificate (PEM): offers
                                           RPC-with-TLS (``nfsd.service.tlsconfig``)
``tls-key``    (none)                      its private key (PEM)
``tls-client-ca`` (none)                   CA that client certificates must verify
                                           against (``xprtsec=mtls``)
``workers``    the number of cores         server processes (1: one process,
                                           no supervisor; ``nfsd.service.supervisor``)
``proxy-from`` (none)                      balancers whose PROXY protocol header
                                           names the real client (CIDR,...)
``secret-file`` (the state directory's)    the handles' key, shared by hosts
=============  ==========================  =================================

Limits of the transport (``nfsd.transport.server.Limits``), each logged when it bites:

====================  =======  ============================================
key                   default  meaning
====================  =======  ============================================
``max-connections``   1024     TCP connections open at once
``max-unvalidated``   64       connections that have not made a valid call
                               yet; past it the oldest is closed
``idle-timeout``      300      seconds without a call before a close
``record-timeout``    30       seconds to complete a record once begun
``max-inflight``      16       calls in flight per connection
``max-unsent``        4194304  reply bytes unsent per connection
====================  =======  ============================================

An ``exports`` file named on the command line or in the config file must
exist (it, or its ``.d`` folder); the default one may be absent, and then
the server admits loopback only and says so.

The file is ``/etc/recovery_fs.conf`` when it exists and no ``--config`` is
given; a ``--config`` file must exist.  Relative paths in the file are taken
from the file's directory, on the command line from the working directory,
so a daemon that changes directory keeps meaning the same files.  Every
error is a :class:`ConfigError` whose message names the file or the option.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nfsd.transport.server import Limits

_LIMITS = Limits()  # the transport's defaults are the settings' defaults

DEFAULT_CONFIG_FILE = Path("/etc/recovery_fs.conf")
DEFAULT_EXPORTS_FILE = Path("/etc/recovery_fs/exports")
SECTION = "server"
EXPORT_PATH = "/recover/images"


class ConfigError(Exception):
    """A setting is missing, malformed or refers to something unusable."""


@dataclass(frozen=True, slots=True)
class Config:
    """Resolved settings of one server (paths absolute)."""

    storage: Path = Path("/storage")
    bind: str = "0.0.0.0"
    port: int = 2049
    portmap: bool = True
    state_dir: Path = Path("/var/lib/recovery_fs")
    log_file: Path = Path("/var/log/recovery_fs")
    exports: Path | None = None  # None: DEFAULT_EXPORTS_FILE when present
    udp: bool = False
    max_connections: int = _LIMITS.max_connections
    max_unvalidated: int = _LIMITS.max_unvalidated
    idle_timeout: float = _LIMITS.idle_timeout
    record_timeout: float = _LIMITS.record_timeout
    max_inflight: int = _LIMITS.max_inflight
    max_unsent: int = _LIMITS.max_unsent
    tls_cert: Path | None = None  # RPC-with-TLS offered when set (with tls_key)
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    workers: int = 0  # 0: the number of cores (see worker_count)
    proxy_from: tuple[str, ...] = ()  # networks of the balancers sending PROXY headers
    secret_file: Path | None = None  # None: the state directory's secret
    export_path: str = EXPORT_PATH

    def worker_count(self) -> int:
        """Server processes to run: ``workers``, or the number of cores if 0."""
        return self.workers or max(1, os.cpu_count() or 1)

    def exports_file(self) -> Path | None:
        """The exports file to read, or None for the built-in loopback-only list."""
        if self.exports is not None:
            if not self.exports.exists() and not Path(f"{self.exports}.d").is_dir():
                raise ConfigError(f"the exports file {self.exports} does not exist")
            return self.exports
        default = DEFAULT_EXPORTS_FILE
        if default.exists() or Path(f"{default}.d").is_dir():
            return default
        return None

    def check_storage(self) -> None:
        """The storage must be an existing, readable directory."""
        if not self.storage.exists():
            raise ConfigError(f"the storage directory {self.storage} does not exist")
        if not self.storage.is_dir():
            raise ConfigError(f"the storage {self.storage} is not a directory")
        try:
            next(iter(self.storage.iterdir()), None)
        except OSError as e:
            raise ConfigError(
                f"cannot read the storage directory {self.storage}: {e.strerror}"
            ) from e
        storage = self.storage.resolve()
        for name, path in (("state directory", self.state_dir), ("log file", self.log_file)):
            if storage == path.resolve() or storage in path.resolve().parents:
                raise ConfigError(
                    f"the {name} {path} is inside the storage {self.storage}: "
                    "recovery-fs never writes into the storage"
                )


FIELDS = {f.name for f in dataclasses.fields(Config)} - {"export_path"}
TLS_FILES = ("tls_cert", "tls_key", "tls_client_ca")
LIMITS = {
    "max_connections",
    "max_unvalidated",
    "idle_timeout",
    "record_timeout",
    "max_inflight",
    "max_unsent",
}


def parse_limit(name: str, text: object) -> int | float:
    """A positive number for the limit ``name`` (seconds may be fractional)."""
    kind = float if name.endswith("timeout") else int
    try:
        value = kind(str(text).strip())
    except ValueError:
        raise ConfigError(f"{name.replace('_', '-')}: {text!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name.replace('_', '-')}: must be above 0, not {value}")
    return value


def parse_workers(text: object) -> int:
    """A number of server processes: 1 or more, or 0 for the number of cores."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"workers: {text!r} is not a number") from None
    if not 0 <= value <= 256:
        raise ConfigError(f"workers: {value} is not in 0..256 (0: the number of cores)")
    return value


def parse_networks(text: object) -> tuple[str, ...]:
    """``CIDR,CIDR,...`` (an address alone is its /32 or /128), normalised."""
    items = text if isinstance(text, list | tuple) else str(text).split(",")
    out = []
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"proxy-from: {item!r} is not an address or network") from None
    return tuple(out)


def parse_bind(text: str) -> str:
    """An IPv4 or IPv6 address literal, normalised."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise ConfigError(
            f"bind: {text!r} is not an IP address (e.g. 0.0.0.0, ::, 127.0.0.1)"
        ) from None


def parse_port(text: object) -> int:
    try:
        port = int(str(text))
    except ValueError:
        raise ConfigError(f"port: {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port: {port} is not in 0..65535")
    return port


PARSERS = {"workers": parse_workers, "proxy_from": parse_networks}


def _read_file(path: Path) -> dict[str, object]:
    """The [server] settings of an INI file, typed, paths made absolute."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}") from e
    except (configparser.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a valid INI file: {e}") from e
    unknown_sections = [s for s in parser.sections() if s != SECTION]
    if unknown_sections:
        raise ConfigError(f"{path}: unknown section [{unknown_sections[0]}] (only [{SECTION}])")
    if not parser.has_section(SECTION):
        return {}
    out: dict[str, object] = {}
    base = path.parent
    for key, raw in parser.items(SECTION):
        name = key.replace("-", "_")
        where = f"{path}: [{SECTION}] {key}"
        if name not in FIELDS:
            raise ConfigError(f"{where}: unknown setting (known: {', '.join(sorted(FIELDS))})")
        try:
            if name == "port":
                out[name] = parse_port(raw)
            elif name == "bind":
                out[name] = parse_bind(raw)
            elif name in ("portmap", "udp"):
                out[name] = parser.getboolean(SECTION, key)
            elif name in PARSERS:
                out[name] = PARSERS[name](raw)
            elif name in LIMITS:
                out[name] = parse_limit(name, raw)
            else:
                if not raw.strip():
                    raise ConfigError("empty path")
                out[name] = base / Path(raw.strip()).expanduser()
        except (ConfigError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None
    return out


def load(config_file: Path | None, overrides: Mapping[str, object]) -> Config:
    """Defaults, then ``config_file`` (or the default file if present), then ``overrides``.

    ``overrides`` holds the command-line values that were given (``None``
    values are ignored), keyed by field name.
    """
    values: dict[str, object] = {}
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"the config file {config_file} does not exist")
        values.update(_read_file(config_file))
    elif DEFAULT_CONFIG_FILE.is_file():
        values.update(_read_file(DEFAULT_CONFIG_FILE))
    parsers = {"bind": lambda v: parse_bind(str(v)), "port": parse_port, **PARSERS}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in FIELDS:
            raise ConfigError(f"unknown setting {name}")
        if name in LIMITS:
            values[name] = parse_limit(name, value)
        else:
            values[name] = parsers[name](value) if name in parsers else value
    for name in ("storage", "state_dir", "log_file", "exports", "secret_file"):
        if name in values:
            values[name] = Path(values[name]).absolute()  # type: ignore[arg-type]
    for name in TLS_FILES:
        if name in values:
            values[name] = Path(values[name]).absolute()  # type: ignore[arg-type]
    return Config(**values)  # type: ignore[arg-type]
