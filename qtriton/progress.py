"""One progress bar for qtriton's long work (calibration, quantize_model, sensitivity, plans,
reports, eval): tqdm on stderr, shown only where stderr is a terminal unless asked."""

from __future__ import annotations

from collections.abc import Iterable


def progress(iterable: Iterable, *, desc: str, total: int | None = None, unit: str = "it",
             enabled: bool | None = None) -> Iterable:
    """iterable, wrapped in a tqdm bar. enabled: True always, False never, None (the default
    of every qtriton entry) only when stderr is a terminal: tests, logs and pipes stay clean."""
    if enabled is False:
        return iterable
    from tqdm.auto import tqdm  # imported on first use: `import qtriton` stays light

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=None if enabled is None else False)
