"""Read character vectors from an R lazy-load database (``Rdata.rdb``) without R.

janeaustenr ships its novels as R objects. Each object in ``Rdata.rdb`` is a 4-byte big-endian length followed by a
zlib stream holding R's XDR serialization; each novel is a plain character vector (STRSXP) of lines. Only that case
is supported, which keeps this reader to a few lines of standard library.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_STRSXP = 16
_LATIN1 = 1 << 14  # gp bit 2 of a CHARSXP, shifted past the 12 type/flag bits
_NA_LENGTH = -1


def _unserialize_strsxp(blob: bytes) -> list[str | None]:
    """Decode one XDR-serialized character vector; ``None`` stands for ``NA``."""
    if blob[:2] != b"X\n":
        raise ValueError("not an XDR R serialization")
    pos = 2
    version = struct.unpack_from(">i", blob, pos)[0]
    pos += 12
    if version == 3:  # version 3 adds the native encoding name
        pos += 4 + struct.unpack_from(">i", blob, pos)[0]
    flags, length = struct.unpack_from(">ii", blob, pos)
    pos += 8
    if flags & 0xFF != _STRSXP:
        raise ValueError(f"expected a character vector (type 16), got type {flags & 0xFF}")
    out: list[str | None] = []
    for _ in range(length):
        char_flags, size = struct.unpack_from(">ii", blob, pos)
        pos += 8
        if size == _NA_LENGTH:
            out.append(None)
            continue
        out.append(blob[pos : pos + size].decode("latin-1" if char_flags & _LATIN1 else "utf-8"))
        pos += size
    return out


def read_character_vectors(rdb: Path) -> list[list[str | None]]:
    """Every object of an ``.rdb`` file that is a character vector, in file order."""
    data = rdb.read_bytes()
    pos, vectors = 0, []
    while pos < len(data):
        inflater = zlib.decompressobj()
        blob = inflater.decompress(data[pos + 4 :])
        vectors.append(_unserialize_strsxp(blob))
        pos = len(data) - len(inflater.unused_data)
    return vectors
