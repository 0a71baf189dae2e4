"""Looking inside a char LM: per-character activations of chosen units over a text, as
Karpathy et al. 2015 ("Visualizing and understanding recurrent networks") and Radford
et al. 2017 (the sentiment unit) draw them. Each unit gets a panel: the text, wrapped,
every character on a cell coloured by the unit's value after reading it (red positive,
blue negative, white zero). ``probe_units`` picks the units a sentiment probe leans on.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch

from s2s.charlm.probe import INNER_FOLDS, fit, label_sequences, sequence_features
from s2s.data.text import read_labelled
from s2s.data.units import Units
from s2s.errors import DataError, S2SError
from s2s.nn.charlm import CharLM

# The PNG's geometry, in inches at DPI dots per inch: one character cell, the space
# above each panel for its title, and the margin left and right.
CELL_W, CELL_H, TITLE_H, MARGIN, DPI = 0.11, 0.2, 0.3, 0.1, 100
NEWLINE = "¶"  # how a newline shows in its cell


def char_ids(text: str, units: Units) -> tuple[list[int], list[int]]:
    """The unit ids of ``text`` and, for each character, the position of its last unit
    (a character of several bytes shows the state after its last byte)."""
    ids, last = [], []
    for ch in text:
        ids += units.encode(ch) or [0]
        last.append(len(ids) - 1)
    return ids, last


@torch.no_grad()
def activations(model: CharLM, units: Units, text: str, *, backward: bool = False) -> np.ndarray:
    """(characters, hidden): the top layer's output after each character of ``text``;
    ``backward`` (a backward LM): read from the last character, rows in text order."""
    if not text:
        raise DataError("the text to visualize is empty")
    model.eval()
    ids, last = char_ids(text[::-1] if backward else text, units)
    device = model.output.weight.device
    out, _ = model.rnn(model.embedding(torch.tensor([ids], device=device)))
    rows = out[0, last].float().cpu().numpy()
    return rows[::-1].copy() if backward else rows


def probe_units(
    model: CharLM,
    units: Units,
    pos: str,
    neg: str,
    *,
    top: int,
    seed: int = 0,
    backward: bool = False,
    encoding: str | None = None,
) -> list[int]:
    """The ``top`` units with the largest absolute weights of a logistic regression of
    the labels on the mean top-layer output (features standardised, so weights compare);
    char units decode the files with ``encoding`` (default the LM's)."""
    texts, labels = read_labelled(pos, neg)
    if min(labels.count(0), labels.count(1)) < INNER_FOLDS:
        raise DataError(
            f"--probe needs at least {INNER_FOLDS} texts in each of --pos and --neg (its "
            f"regression chooses its strength by {INNER_FOLDS}-fold cross-validation)"
        )
    seqs = label_sequences(units, backward, texts, encoding)
    x = sequence_features(model, seqs, kinds=("mean",))
    fitted = fit(x.numpy().astype(np.float64), np.asarray(labels), seed=seed)
    weights = np.abs(fitted[-1].coef_[0])
    return [int(i) for i in np.argsort(-weights, kind="stable")[:top]]


def layout(text: str, width: int) -> list[tuple[int, int]]:
    """(row, column) of each character: rows of ``width``, a newline ends its row."""
    cells, row, col = [], 0, 0
    for ch in text:
        if col == width:
            row, col = row + 1, 0
        cells.append((row, col))
        col += 1
        if ch == "\n":
            row, col = row + 1, 0
    return cells


def figure_inches(rows: int, width: int, panels: int) -> tuple[float, float]:
    return 2 * MARGIN + width * CELL_W, panels * (TITLE_H + rows * CELL_H)


def draw_png(text: str, values: np.ndarray, unit_ids: list[int], width: int, path: Path) -> None:
    """One panel per unit (a column of ``values``): characters on coloured cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = layout(text, width)
    rows = cells[-1][0] + 1
    w_in, h_in = figure_inches(rows, width, len(unit_ids))
    fig = plt.figure(figsize=(w_in, h_in), dpi=DPI)
    panel_h = TITLE_H + rows * CELL_H
    for k, unit in enumerate(unit_ids):
        grid = np.full((rows, width), np.nan)
        for (r, c), v in zip(cells, values[:, k]):
            grid[r, c] = v
        bottom = h_in - (k + 1) * panel_h
        ax = fig.add_axes(
            (MARGIN / w_in, bottom / h_in, width * CELL_W / w_in, rows * CELL_H / h_in)
        )
        ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        for (r, c), ch in zip(cells, text):
            shown = NEWLINE if ch == "\n" else ch
            ax.text(c, r, shown, ha="center", va="center", fontsize=7, family="monospace")
        ax.set_axis_off()
        ax.set_title(f"unit {unit}", fontsize=8, loc="left")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_html(text: str, values: np.ndarray, unit_ids: list[int], path: Path) -> None:
    """The same as an HTML page: a block per unit, a coloured span per character."""
    blocks = []
    for k, unit in enumerate(unit_ids):
        spans = []
        for ch, v in zip(text, values[:, k]):
            colour = "220,50,50" if v > 0 else "50,90,220"
            shown = html.escape(NEWLINE + "\n" if ch == "\n" else ch)
            spans.append(
                f'<span title="{v:.3f}" style="background:rgba({colour},{min(1.0, abs(v)):.2f})"'
                f">{shown}</span>"
            )
        blocks.append(f"<h3>unit {unit}</h3>\n<pre>{''.join(spans)}</pre>")
    body = "\n".join(blocks)
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>s2s charlm visualize'
        "</title>\n<style>pre{font-family:monospace;white-space:pre-wrap;line-height:1.5}"
        f"</style></head><body>\n{body}\n</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")


def visualize(
    model: CharLM,
    units: Units,
    text: str,
    unit_ids: list[int],
    out: Path,
    *,
    width: int = 80,
    backward: bool = False,
) -> Path:
    """Draw ``unit_ids`` over ``text`` into ``out`` (.png or .html, by its suffix);
    ``backward``: the model is a backward LM (``activations``)."""
    hidden = model.rnn.output_size
    bad = [u for u in unit_ids if not 0 <= u < hidden]
    if bad or not unit_ids:
        raise S2SError(f"--units must name units 0..{hidden - 1} of the top layer (got {bad})")
    values = activations(model, units, text, backward=backward)[:, unit_ids]
    if out.suffix.lower() == ".png":
        draw_png(text, values, unit_ids, width, out)
    elif out.suffix.lower() in (".html", ".htm"):
        write_html(text, values, unit_ids, out)
    else:
        raise S2SError(f"--out {out}: write a .png or an .html file")
    return out
