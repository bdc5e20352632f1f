"""``grace explain`` in the terminal: both rationales, the cosine, tokens coloured by their share
(green pulls the texts together, red pushes them apart; stronger colour, larger share), and the
tokens adding and subtracting most. Rendering only; the numbers come from grace.explain.pair.

A rationale is shown as it is, except where it would print as nothing: an empty one reads
"(no rationale)", a whitespace-only one names its characters ("(whitespace only: 64 newlines)"),
so a rationale of newlines is not mistaken for a missing one."""

from __future__ import annotations

import unicodedata

from rich.console import Console
from rich.table import Table
from rich.text import Text

from grace.explain.pair import Explanation, SideExplanation


_SPACE_NAMES = {"\n": "newline", " ": "space", "\t": "tab", "\r": "carriage return"}


def _space_name(char: str) -> str:
    return _SPACE_NAMES.get(char) or unicodedata.name(char, f"U+{ord(char):04X}").lower()


def shown_rationale(rationale: str, empty: str = "(no rationale)") -> str:
    """``rationale`` as printed: itself when it has a visible character, ``empty`` when it is
    empty, and a count of its characters when it is whitespace only (e.g. ``(whitespace only:
    64 newlines)``; kinds in order of first appearance)."""
    if not rationale:
        return empty
    if not rationale.isspace():
        return rationale
    counts: dict[str, int] = {}
    for char in rationale:
        counts[char] = counts.get(char, 0) + 1
    parts = [f"{n} {_space_name(c)}{'s' if n > 1 else ''}" for c, n in counts.items()]
    return f"(whitespace only: {', '.join(parts)})"


def _shade(value: float, scale: float) -> str:
    strength = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    level = int(40 + 160 * strength)  # 40 (faint) .. 200 (strong)
    return f"on rgb(0,{level},0)" if value > 0 else f"on rgb({level},0,0)"


def highlighted(side: SideExplanation, segment: str | None = None) -> Text:
    """The side's tokens (of one segment, or all) with a background shaded by their share."""
    tokens = [t for t in side.tokens if segment is None or t.segment == segment]
    scale = max((abs(t.contribution) for t in side.tokens), default=0.0)
    text = Text()
    for t in tokens:
        text.append(t.token.replace("\n", "\u21b5"), style=_shade(t.contribution, scale))
    return text


def _top_table(ex: Explanation, k: int) -> Table:
    table = Table(title=f"tokens adding / subtracting most (top {k})", show_lines=False)
    for name in ("A +", "A -", "B +", "B -"):
        table.add_column(name)
    columns = [ex.a.top(k, 1), ex.a.top(k, -1), ex.b.top(k, 1), ex.b.top(k, -1)]
    for row in range(max((len(c) for c in columns), default=0)):
        cells = []
        for col in columns:
            cells.append(f"{col[row].token!r} {col[row].contribution:+.4f} ({col[row].segment})"
                         if row < len(col) else "")
        table.add_row(*cells)
    return table


def render(ex: Explanation, top_k: int = 8, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]cosine {ex.cosine:.4f}[/bold]  (model {ex.model}, {ex.kind}; A's token "
                  f"shares sum to {ex.a.total:.6f}, B's to {ex.b.total:.6f})")
    for name, side in (("A", ex.a), ("B", ex.b)):
        console.rule(f"{name}: {side.text[:80]}")
        if side.rationale or ex.kind == "grace":  # the other kinds never have one
            console.print(Text("rationale: ", style="bold") + Text(shown_rationale(side.rationale)))
        if side.decoded is not None:
            console.print(Text("decoded: ", style="bold")
                          + Text(shown_rationale(side.decoded, empty="(nothing decoded)")))
        for segment in ("text", "rationale", "soft"):
            if any(t.segment == segment for t in side.tokens):
                console.print(Text(f"{segment}: ", style="bold") + highlighted(side, segment))
    console.print(_top_table(ex, top_k))
