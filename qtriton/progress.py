"""One progress display for qtriton's long work (calibration, quantize_model, sensitivity, plans,
reports, eval), on stderr: a tqdm bar on a terminal; elsewhere (logs, pipes, CI) a plain line
every LINE_INTERVAL_S seconds of a long step, so a step of minutes is never silent there."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

# Off a terminal, a step shorter than this prints nothing; a longer one prints a line per interval.
LINE_INTERVAL_S = 30.0


def progress(iterable: Iterable, *, desc: str, total: int | None = None, unit: str = "it",
             enabled: bool | None = None) -> Iterable:
    """iterable, with its progress shown on stderr. enabled: True a tqdm bar always, False
    nothing, None (the default of every qtriton entry) a bar where stderr is a terminal,
    elsewhere a plain line every LINE_INTERVAL_S seconds (short steps print nothing)."""
    if enabled is False:
        return iterable
    if enabled is None and not _is_terminal(sys.stderr):
        return _lines(iterable, desc, total, unit, LINE_INTERVAL_S)
    from tqdm.auto import tqdm  # imported on first use: `import qtriton` stays light

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _lines(iterable: Iterable, desc: str, total: int | None, unit: str, interval: float) -> Iterator:
    """The items of iterable; once `interval` seconds have passed since the last line, a
    tqdm-formatted line ("desc:  40%|####      | 4/10 [01:02<01:33, 15.5s/it]") on stderr,
    and a last one when a step that printed any ends (or is left early)."""
    from tqdm import tqdm

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    start = last = time.monotonic()
    count = shown = 0

    def line(now: float) -> None:
        text = tqdm.format_meter(count, total, now - start, prefix=desc, unit=unit, ascii=True)
        print(text, file=sys.stderr, flush=True)

    try:
        for item in iterable:
            yield item  # the caller's work on the item runs here
            count += 1
            now = time.monotonic()
            if now - last >= interval:
                line(now)
                last, shown = now, count
    finally:
        if 0 < shown < count:
            line(time.monotonic())
