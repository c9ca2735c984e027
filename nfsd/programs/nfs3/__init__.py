"""The NFS program, version 3 (RFC 1813): a read-only server.

``program.build`` holds the procedure table; each module below serves a
group of procedures through ``service.Nfs3Service``.
"""
