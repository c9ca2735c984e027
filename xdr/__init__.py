"""XDR types of the protocols recovery-fs speaks, on xdrlib3 (pynfs-style).

Each module holds one protocol: its constants, one class per XDR type
(named as in the RFC, with the XDR definition in its docstring), and a
``Packer``/``Unpacker`` pair whose ``pack_<type>``/``unpack_<type>`` methods
convert them.  Nothing here knows of files, sockets or the server.
"""

from xdr.base import Packer, Unpacker, XdrError

__all__ = ["Packer", "Unpacker", "XdrError"]
