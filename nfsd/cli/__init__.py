"""The ``recovery-fs`` command (``commands``), its storage tools (``storage``)
and ``tls init`` (``tls``)."""

from nfsd.cli.commands import main

__all__ = ["main"]
