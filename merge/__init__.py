"""The storage side of recovery-fs: backups presented as a read-only tree.

``build_namespace(storage_root)`` returns the one object the server needs,
a :class:`merge.namespace.Namespace`.  Nothing here knows of RPC or NFS.
"""

from merge.stack import build_namespace

__all__ = ["build_namespace"]
