"""Key/value caches: one pool of slots per engine, one slot per sequence, grown on demand.

All sequences of an engine keep their keys and values in one array per kind, laid out
(layer, slot, kv head, position, head_dim). That layout is what lets a decode or
verification step attend for the whole batch in one matmul per layer (a view over a slot
range) instead of one call per sequence. Storage grows by doubling, in slots as sequences
join and in positions as the longest reservation grows, so memory follows the tokens
actually used (never preallocated to max_seq_len); `trim()` drops it when no slot is live
and shrinks it when the longest live reservation falls far below it.

Threads: one thread (the engine's) forwards through a pool and calls reserve/trim; a slot
may be released from any thread (a cache is released when garbage-collected), so the slot
bookkeeping is locked and release never touches the arrays.
"""
from __future__ import annotations

import heapq
import threading
import weakref

import numpy as np

SHRINK_FACTOR = 4   # shrink the position storage once it is this many times the longest live reservation


class KVPool:
    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int):
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self._free: list[int] = []          # released slots, lowest first (keeps batches' slot ranges tight)
        self._next_slot = 0
        self._reserved: dict[int, int] = {}  # live slot -> positions it has reserved
        self._lock = threading.Lock()
        self.keys = self._zeros(0, 0)
        self.values = self._zeros(0, 0)

    def _zeros(self, slots: int, positions: int) -> np.ndarray:
        # zeros, not empty: slots inside a batch's range but outside the batch are read (then discarded),
        # and must hold finite numbers
        return np.zeros((self.num_layers, slots, self.num_kv_heads, positions, self.head_dim), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    @property
    def position_capacity(self) -> int:
        return self.keys.shape[3]

    @property
    def live_slots(self) -> int:
        return len(self._reserved)

    def allocate(self) -> int:
        with self._lock:
            slot = heapq.heappop(self._free) if self._free else self._next_slot
            self._next_slot = max(self._next_slot, slot + 1)
            self._reserved[slot] = 0
            return slot

    def release(self, slot: int) -> None:
        with self._lock:
            if self._reserved.pop(slot, None) is not None:
                heapq.heappush(self._free, slot)

    def reserve(self, slot: int, positions: int) -> int:
        """Make `slot` hold `positions` positions (doubling its reservation); return the reservation."""
        with self._lock:
            reserved = self._reserved[slot]
            if positions > reserved:
                reserved = self._reserved[slot] = max(positions, 2 * reserved)
            slots, capacity = self.keys.shape[1], self.position_capacity
            if slot >= slots or reserved > capacity:
                # positions grow by at least a quarter: a copy of the whole pool now and then, not every step
                positions = capacity if reserved <= capacity else max(reserved, capacity + capacity // 4)
                self._resize(max(2 * slots, slot + 1) if slot >= slots else slots, positions)
            return reserved

    def trim(self) -> None:
        """Free the storage when no slot is live; halve it while it is far above the longest reservation."""
        with self._lock:
            if not self._reserved:
                self._free, self._next_slot = [], 0
                if self.keys.size:
                    self.keys, self.values = self._zeros(0, 0), self._zeros(0, 0)
                return
            longest = max(max(self._reserved.values()), 1)
            if self.position_capacity > SHRINK_FACTOR * longest:
                self._resize(self.keys.shape[1], 2 * longest)

    def _resize(self, slots: int, positions: int) -> None:
        keys, values = self._zeros(slots, positions), self._zeros(slots, positions)
        kept_slots, kept_positions = min(slots, self.keys.shape[1]), min(positions, self.position_capacity)
        keys[:, :kept_slots, :, :kept_positions] = self.keys[:, :kept_slots, :, :kept_positions]
        values[:, :kept_slots, :, :kept_positions] = self.values[:, :kept_slots, :, :kept_positions]
        self.keys, self.values = keys, values


class KVCache:
    """Keys and values of one sequence, all layers, positions `0 .. length-1`: a slot of a KVPool.

    Without a pool it gets a private one (a standalone cache). The slot is released when the
    cache is garbage-collected or `release()`d. `truncate` rolls back rejected draft positions
    without freeing, since they are about to be overwritten.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, pool: KVPool | None = None):
        self.pool = pool if pool is not None else KVPool(num_layers, num_kv_heads, head_dim)
        if (self.pool.num_layers, self.pool.num_kv_heads, self.pool.head_dim) != (num_layers, num_kv_heads, head_dim):
            raise ValueError("KVCache shape does not match its pool")
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.slot = self.pool.allocate()
        self._length = 0
        self._capacity = 0
        self._finalizer = weakref.finalize(self, self.pool.release, self.slot)

    def release(self) -> None:
        self._finalizer()

    @property
    def length(self) -> int:
        """Positions filled (tokens this sequence has been forwarded through)."""
        return self._length

    @property
    def capacity(self) -> int:
        """Positions reserved for this sequence."""
        return self._capacity

    @property
    def nbytes(self) -> int:
        """Bytes of this sequence's reservation (the pool's storage is slots x the longest reservation)."""
        return 2 * self.num_layers * self.num_kv_heads * self._capacity * self.head_dim * 4

    def reserve(self, new_tokens: int) -> None:
        """Make room for `new_tokens` more positions after `length`."""
        if not self._finalizer.alive:
            raise ValueError("this KVCache was released; its slot may belong to another sequence")
        self._capacity = self.pool.reserve(self.slot, self._length + new_tokens)

    def write(self, layer: int, start: int, keys: np.ndarray, values: np.ndarray) -> None:
        """Store `keys`, `values` (n, kv_heads, head_dim) of `layer` at positions start .. start+n-1."""
        end = start + keys.shape[0]
        self.pool.keys[layer, self.slot, :, start:end] = keys.transpose(1, 0, 2)
        self.pool.values[layer, self.slot, :, start:end] = values.transpose(1, 0, 2)

    def layer(self, layer: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of `layer`'s keys and values for positions 0 .. end-1, each (kv_heads, end, head_dim)."""
        return self.pool.keys[layer, self.slot, :, :end], self.pool.values[layer, self.slot, :, :end]

    def advance(self, new_tokens: int) -> None:
        """Mark `new_tokens` written positions as filled (after every layer has written them)."""
        if self._length + new_tokens > self._capacity:
            raise ValueError(f"cannot advance by {new_tokens}: only {self._capacity - self._length} positions reserved")
        self._length += new_tokens

    def truncate(self, length: int) -> None:
        """Forget positions `length ..`: the rollback of rejected draft tokens."""
        if not 0 <= length <= self._length:
            raise ValueError(f"truncate length must be 0..{self._length}, got {length}")
        self._length = length
