"""Instant recovery's storage core: a writable overlay beside ``merge/``, no RPC.

``instant.store`` keeps file contents written over a read-only base in a
session directory; ``instant.namespace`` is the writable tree stacked on
``merge.namespace``.  Nothing here writes to the storage.  Design:
``docs/instant-design.md``.
"""
