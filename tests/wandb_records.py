"""Read an offline W&B run (``run-*.wandb``): the protobuf records W&B would sync.

wandb 0.31 no longer writes ``files/config.yaml`` / ``wandb-summary.json`` for offline runs; the
``.wandb`` file (a LevelDB-style log of ``wandb_internal_pb2.Record``) holds them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32768, 7  # log block size; file and record headers are both 7 bytes
FULL, FIRST, LAST = 1, 2, 4


def records(path: Path) -> Iterator[Any]:
    """The records of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, buf = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if left < HEADER or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        buf = chunk if kind in (FULL, FIRST) else buf + chunk
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


@dataclass
class OfflineRun:
    """What one offline run recorded: group, job type, name, config, summary, exit code."""

    group: str = ""
    job_type: str = ""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    exit_code: int | None = None


def read_run(run_dir: Path) -> OfflineRun:
    (path,) = Path(run_dir).glob("run-*.wandb")
    out = OfflineRun()
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.group, out.job_type, out.name = (
                rec.run.run_group,
                rec.run.job_type,
                rec.run.display_name,
            )
        elif kind == "config":
            out.config.update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "summary":
            for u in rec.summary.update:
                out.summary["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
        elif kind == "artifact":
            out.artifacts.append(f"{rec.artifact.type}:{rec.artifact.name}")
        elif kind == "exit":
            out.exit_code = rec.exit.exit_code
    return out
