"""Per-sequence key/value cache for every layer of a decoder, grown on demand."""
from __future__ import annotations

import numpy as np


class KVCache:
    """Keys and values of one sequence, all layers, positions `0 .. length-1`.

    Storage grows by doubling (or to the needed size, whichever is larger) as tokens
    arrive, so memory follows the tokens actually used rather than max_seq_len and stays
    under twice the longest length reached. `truncate` rolls back rejected draft positions
    without freeing, since they are about to be overwritten.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int):
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self._length = 0
        # (layer, kv head, position, head_dim): each head's rows are contiguous for the attention matmuls
        self._keys = np.empty((num_layers, num_kv_heads, 0, head_dim), dtype=np.float32)
        self._values = np.empty_like(self._keys)

    @property
    def length(self) -> int:
        """Positions filled (tokens this sequence has been forwarded through)."""
        return self._length

    @property
    def capacity(self) -> int:
        """Positions allocated."""
        return self._keys.shape[2]

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + self._values.nbytes

    def reserve(self, new_tokens: int) -> None:
        """Make room for `new_tokens` more positions after `length`."""
        needed = self._length + new_tokens
        if needed <= self.capacity:
            return
        new_capacity = max(needed, 2 * self.capacity)
        shape = (self.num_layers, self.num_kv_heads, new_capacity, self.head_dim)
        keys, values = np.empty(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
        keys[:, :, :self._length] = self._keys[:, :, :self._length]
        values[:, :, :self._length] = self._values[:, :, :self._length]
        self._keys, self._values = keys, values

    def write(self, layer: int, start: int, keys: np.ndarray, values: np.ndarray) -> None:
        """Store `keys`, `values` (n, kv_heads, head_dim) of `layer` at positions start .. start+n-1."""
        end = start + keys.shape[0]
        self._keys[layer, :, start:end] = keys.transpose(1, 0, 2)
        self._values[layer, :, start:end] = values.transpose(1, 0, 2)

    def layer(self, layer: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of `layer`'s keys and values for positions 0 .. end-1, each (kv_heads, end, head_dim)."""
        return self._keys[layer, :, :end], self._values[layer, :, :end]

    def advance(self, new_tokens: int) -> None:
        """Mark `new_tokens` written positions as filled (after every layer has written them)."""
        if self._length + new_tokens > self.capacity:
            raise ValueError(f"cannot advance by {new_tokens}: only {self.capacity - self._length} positions reserved")
        self._length += new_tokens

    def truncate(self, length: int) -> None:
        """Forget positions `length ..`: the rollback of rejected draft tokens."""
        if not 0 <= length <= self._length:
            raise ValueError(f"truncate length must be 0..{self._length}, got {length}")
        self._length = length
