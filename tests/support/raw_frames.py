"""WebSocket frames as a raw client socket writes them, for tests that speak below any library."""

from __future__ import annotations

import os
import struct

from websockets.speedups import apply_mask


def client_frame(payload: bytes, first: int = 0x81) -> bytes:
    """A masked client frame; ``first`` is its first byte (FIN, RSV bits, opcode)."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    return header + key + apply_mask(payload, key)
