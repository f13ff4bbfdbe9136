"""Reading an offline wandb run back: the records of its `run-<id>.wandb` file.

wandb 0.31 ships no Python reader for these files. The file is a LevelDB-style log (the
format of wandb's own `datastore`): a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each with a 7-byte header (CRC-32 of type and data, length, type:
full / first / middle / last); the chunks of a record hold one `wandb.proto` `Record`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[pb.Record]:
    data = path.read_bytes()
    magic, version = struct.unpack("<HB", data[4:7])
    assert data[:4] == b":W&B" and magic == 0xBEE1 and version == 0, f"not a wandb log: {path}"
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # padding up to the block's end
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + chunk) == crc, f"bad checksum at byte {pos} of {path}"
        pos += HEADER + length
        parts.append(chunk)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def by_type(path: Path, kind: str) -> list:
    """The records of one type (`run`, `history`, `metric`, `artifact`, `exit`, ...)."""
    return [getattr(r, kind) for r in records(path) if r.WhichOneof("record_type") == kind]


def history_rows(path: Path) -> list[dict[str, str]]:
    """Each logged row as {key: JSON text of the value}."""
    return [
        {item.key or "/".join(item.nested_key): item.value_json for item in h.item}
        for h in by_type(path, "history")
    ]
