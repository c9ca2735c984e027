"""Who may mount: the exports file (Linux exports(5) syntax), matched per client.

Pure code: nothing here knows of RPC or of the server.  ``parse``/``load``
read a file into an immutable :class:`ExportTable`; ``ExportTable.match``
says which client spec (and so which options) admits an address; the
:class:`Resolver` answers the host-name questions matching asks, from a
cache, without ever blocking a caller for long.  The file format is
``docs/exports.5.md``.
"""

from exports.errors import ExportsError
from exports.options import ExportOptions
from exports.parse import load, loopback_only, parse
from exports.resolver import Resolver
from exports.table import ClientSpec, Export, ExportTable

__all__ = [
    "ClientSpec",
    "Export",
    "ExportOptions",
    "ExportTable",
    "ExportsError",
    "Resolver",
    "load",
    "loopback_only",
    "parse",
]
