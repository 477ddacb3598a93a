"""petcd.peer — the transport between members: Raft messages and snapshots.

The wire format is specified in docs/enhancements/0005-peer-transport.md. Typical use by the
member, on its event loop::

    t = PeerTransport(
        TransportConfig(cluster_id, member_id, snapshot_dir),
        on_messages=lambda ms: [node.step(m) for m in ms],   # then wake the Ready loop
        report_unreachable=node.report_unreachable,
        report_snapshot=node.report_snapshot,
        snapshot_source=copy_backend_for,    # (metadata) -> SnapshotFile, in a worker thread
        on_snapshot=install_snapshot_file,                   # (message, path): owns the file
        logger=log,
    )
    await t.start(listen_peer_urls)
    t.add_peer(peer_id, peer_urls)
    ...
    t.send(rd.messages)        # in the Ready loop, after persisting; never awaits
    await t.stop()
"""

from petcd.peer.codec import (
    FrameDecoder,
    HandshakeStatus,
    decode_message,
    encode_frames,
    encode_message,
)
from petcd.peer.errors import CodecError, HandshakeRejectedError, PeerError, PeerUrlError
from petcd.peer.queue import Backoff, PeerQueue
from petcd.peer.transport import (
    InboundStats,
    PeerLogger,
    PeerStats,
    PeerTransport,
    PeerUrl,
    SnapshotFile,
    TransportConfig,
    decode_member_listing,
    encode_member_listing,
    parse_peer_url,
)

__all__ = [
    "Backoff",
    "CodecError",
    "FrameDecoder",
    "HandshakeRejectedError",
    "HandshakeStatus",
    "InboundStats",
    "PeerError",
    "PeerLogger",
    "PeerQueue",
    "PeerStats",
    "PeerTransport",
    "PeerUrl",
    "PeerUrlError",
    "SnapshotFile",
    "TransportConfig",
    "decode_member_listing",
    "decode_message",
    "encode_frames",
    "encode_member_listing",
    "encode_message",
    "parse_peer_url",
]
