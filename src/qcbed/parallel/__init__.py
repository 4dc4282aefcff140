"""Executors that run the engine's per-direction work (serial for now)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm


class SerialExecutor:
    """Runs chunks one after the other in this process."""

    name = "serial"

    def map_chunks(self, fn: Callable, arrays: Any, chunks: Sequence, *,
                   progress: bool = False) -> list:
        """[fn(arrays, c) for c in chunks], with an optional progress bar."""
        it = tqdm(chunks, desc="Bloch", unit="chunk", disable=not progress, leave=False)
        return [fn(arrays, c) for c in it]
