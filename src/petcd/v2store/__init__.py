"""petcd.v2store: etcd's v2 key-value tree (``--enable-v2``), sans I/O.

``V2Store`` is the tree and its watcher hub, ``V2Request`` what travels through raft and
``apply`` runs it; ``V2Error`` carries etcd's v2 error codes. See
``docs/enhancements/0014-v2-api.md``.
"""

from petcd.v2store.errors import V2Error
from petcd.v2store.request import Method, V2FormatError, V2Request, apply
from petcd.v2store.store import Event, Node, NodeView, Sink, V2Store, Watcher, clean

__all__ = [
    "Event",
    "Method",
    "Node",
    "NodeView",
    "Sink",
    "V2Error",
    "V2FormatError",
    "V2Request",
    "V2Store",
    "Watcher",
    "apply",
    "clean",
]
