"""Reading a run: the utilisation table (``Chip.report()``) and a plot of it over time.

The plot needs matplotlib (``pip install lpu[plot]``); nothing else here does.
"""

from __future__ import annotations

from ._core import Chip
from .errors import InputError
from .files import PathLike, atomic_path

__all__ = ["save_plot"]

#: Units shown in the plot (C2C links are not emulated).
UNITS = ("MEM", "VXM", "MXM", "SXM", "ICU")


def save_plot(chip: Chip, path: PathLike, bins: int = 200) -> None:
    """Save a PNG of each unit's busy fraction over the run, in ``bins`` spans."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("the utilisation plot needs matplotlib: pip install 'lpu[plot]'") from e
    if chip.cycles == 0:
        raise InputError("nothing to plot: the chip has not run")
    tl = chip.timeline(bins)
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    for unit in UNITS:
        ax.step(tl["cycles"], 100 * tl[unit], where="post", label=unit)
    ax.set_xlabel("cycle")
    ax.set_ylabel("cycles with an issue (%)")
    ax.set_ylim(0, 105)
    ax.set_xlim(0, chip.cycles)
    ax.set_title(f"{chip.config.name}: utilisation over {chip.cycles:,} cycles")
    ax.legend(loc="upper right", ncol=len(UNITS))
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
