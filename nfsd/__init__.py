"""The NFS server: RPC transport, the MOUNT and NFS programs, and the CLI.

It reaches the storage only through ``merge.namespace.Namespace``.
"""
