"""How the teacher's cached rows are cut into shard files, and the disk those take.

:mod:`fitnets_tf.teacher_shards` writes and reads the shards; this is their layout alone: which
rows each shard holds, its files' names, its ``manifest.json`` record, and the disk a set of
shards takes (checked before any is written).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """How ``num_rows`` rows of several outputs (each row: ``row_shapes[j]`` of ``dtypes[j]``)
    are cut into shards of ``rows_per_shard`` rows."""

    num_rows: int
    row_shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    rows_per_shard: int

    @classmethod
    def within(cls, shard_bytes: int, num_rows: int, row_shapes: Sequence[Sequence[int]],
               dtypes: Sequence[str]) -> ShardPlan:  # fmt: skip
        """The plan whose shards take at most ``shard_bytes`` (at least one row each)."""
        shapes = tuple(tuple(int(d) for d in s) for s in row_shapes)
        plan = cls(num_rows, shapes, tuple(np.dtype(d).name for d in dtypes), 1)
        return dataclasses.replace(plan, rows_per_shard=max(1, shard_bytes // plan.row_bytes))

    @property
    def row_bytes(self) -> int:
        """Bytes of one row of every output."""
        return sum(self._output_row_bytes)

    @property
    def _output_row_bytes(self) -> list[int]:
        return [int(np.prod(s)) * np.dtype(d).itemsize
                for s, d in zip(self.row_shapes, self.dtypes, strict=True)]  # fmt: skip

    @property
    def total_bytes(self) -> int:
        return self.num_rows * self.row_bytes

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.rows_per_shard)

    def bounds(self, shard: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` of ``shard``."""
        start = shard * self.rows_per_shard
        return start, min(start + self.rows_per_shard, self.num_rows)

    def disk_bytes(self, shards: Sequence[int], block: int) -> int:
        """The disk ``shards`` take in ``block``-byte blocks: each output's file (its rows after
        a 128-byte header) and its sha256 file, in whole blocks. Rows alone undercounted a
        cache of tiny shards ~5x."""
        files = [128 + (stop - start) * size for start, stop in map(self.bounds, shards)
                 for size in self._output_row_bytes]  # fmt: skip
        return sum(-(-f // block) + 1 for f in files) * block  # + 1: the sha256 file's block

    @staticmethod
    def file_name(output: int, shard: int) -> str:
        return f"output{output}-shard{shard:05d}.npy"

    def as_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as lists, as read back
