"""Sockets and bytes: RPC over TCP and UDP (``server``), record marking
(``record``), RPC-with-TLS (``tls``) and the small RPC client the server
uses to talk to a portmapper (``rpcclient``).  Nothing here knows a
program: calls go to an ``nfsd.rpc.Dispatcher``."""
