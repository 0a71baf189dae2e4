"""The training progress display both ``s2s train`` and ``s2s charlm train`` use: a
tqdm bar on a terminal (rank 0 only under torchrun), else one log line per record."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

log = logging.getLogger("s2s")


@contextmanager
def training_progress(
    total: int | None, shown: Callable[[dict], dict[str, str]]
) -> Iterator[Callable[[dict], None]]:
    """Yields the ``on_step`` callback for a run of ``total`` steps (None: unknown);
    ``shown`` picks the figures of a train record to display, by name."""
    bar = None
    if sys.stderr.isatty() and os.environ.get("RANK", "0") == "0":  # one bar under torchrun
        from tqdm import tqdm

        bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def on_step(record: dict) -> None:
        figures = shown(record)
        if bar is None:
            log.info("step %d %s", record["step"], " ".join(f"{k} {v}" for k, v in figures.items()))
            return
        bar.n = record["step"]
        bar.set_postfix(**figures, refresh=False)
        bar.refresh()

    try:
        yield on_step
    finally:
        if bar is not None:
            bar.close()
