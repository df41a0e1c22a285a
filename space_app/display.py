# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""How the Space draws experts, tokens and answers: one colour per expert index, whitespace tokens made visible, and
chat answers that look like code kept verbatim in a code block.

The palette is qualitative and ordered so that the first colours are the most distinct: it was chosen among the
Okabe-Ito, Paul Tol (bright, muted, vibrant) and matplotlib tab10 colours, greys left out, by maximising the smallest
CIEDE2000 difference of the first 6, 7, ... 12 colours, both as drawn in the score bars and as the 50% tint the token
chips get. The first 12 differ by ΔE2000 >= 11 as bars and as chips (the former palette's 7th colour, teal, differed
from the 3rd, politics green, by 6.6 as chips); 24 colours, one per expert up to the Space's limit.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "PALETTE",
    "answer_markdown",
    "answer_text",
    "delta_e",
    "delta_e_lab",
    "expert_colors",
    "looks_like_code",
    "min_distance",
    "tint",
    "visible_token",
]

PALETTE = [
    "#0072b2",  # blue (Okabe-Ito)
    "#d62728",  # red (tab10)
    "#009e73",  # bluish green (Okabe-Ito)
    "#bcbd22",  # olive (tab10)
    "#332288",  # indigo (Tol muted)
    "#ff7f0e",  # orange (tab10)
    "#e377c2",  # pink (tab10)
    "#8c564b",  # brown (tab10)
    "#88ccee",  # light cyan (Tol muted)
    "#882255",  # wine (Tol muted)
    "#17becf",  # cyan (tab10)
    "#2ca02c",  # green (tab10)
    "#e69f00",  # orange-yellow (Okabe-Ito)
    "#ee3377",  # magenta (Tol vibrant)
    "#cc6677",  # rose (Tol muted)
    "#9467bd",  # purple (tab10)
    "#ddcc77",  # sand (Tol muted)
    "#117733",  # dark green (Tol muted)
    "#33bbee",  # sky (Tol vibrant)
    "#44aa99",  # teal (Tol muted)
    "#aa4499",  # purple (Tol muted)
    "#999933",  # olive (Tol muted)
    "#ee7733",  # orange (Tol vibrant)
    "#cc3311",  # red (Tol vibrant)
]
CHIP_ALPHA = 0.5  # Gradio's HighlightedText draws a token's background as its colour at 50% opacity on white
# Whitespace drawn as visible marks in the token view (the /route JSON keeps the prompt's own text).
_VISIBLE = {" ": "·", "\n": "⏎", "\t": "→", "\r": "", "\u00a0": "·"}
FENCE = "```"
# A line Markdown would change and code keeps: indented (Markdown drops the indentation or makes it a block of its
# own), a comment or directive starting with "#" (a heading in Markdown), a Python / C-like statement keyword, or a
# line ending in a brace or a semicolon.
_CODE_LINE = re.compile(
    r"^(?:[ \t]{2,}\S|#|(?:def|class|import|from|return|for|while|if|elif|else|try|except|with|print|const|let|var|"
    r"function|public|private|static|void|int|fn|func|package|SELECT|select)\b)|[{};]\s*$"
)


def expert_colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per expert, by its index in the router (the palette repeats after 24 experts)."""
    return {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(names)}


def visible_token(text: str) -> str:
    """A token as shown in its chip: a token of whitespace only (spaces, line ends, tabs) would be an empty chip, so
    it becomes visible marks (``·`` per space, ``⏎`` per line end, ``→`` per tab); other tokens are unchanged."""
    if text.strip():
        return text
    return "".join(_VISIBLE.get(character, "·") for character in text) or "·"


def looks_like_code(text: str) -> bool:
    """Whether a line of ``text`` is one Markdown would change but code keeps (see ``_CODE_LINE``)."""
    return any(_CODE_LINE.search(line) for line in text.splitlines())


def answer_markdown(text: str) -> str:
    """A chat answer as the Chatbot's Markdown should show it: an answer that looks like code and has no code fence
    of its own goes, verbatim, into one code block (so a ``# comment`` is not a heading and indentation stays);
    anything else (prose, or an answer the expert fenced itself) is unchanged."""
    if FENCE in text or not looks_like_code(text):
        return text
    return f"{FENCE}\n{text}\n{FENCE}"


def answer_text(markdown: str) -> str:
    """The answer that `answer_markdown` drew (the expert's own text, for the conversation it is shown next)."""
    inner = markdown.removeprefix(f"{FENCE}\n").removesuffix(f"\n{FENCE}")
    if len(inner) == len(markdown) - 2 * len(FENCE) - 2 and FENCE not in inner:
        return inner
    return markdown


def tint(color: str, alpha: float = CHIP_ALPHA) -> str:
    """``color`` at opacity ``alpha`` over white, as a hex colour."""
    red, green, blue = _rgb(color)
    return "#" + "".join(f"{round(255 * (alpha * c + 1 - alpha)):02x}" for c in (red, green, blue))


def min_distance(colors: Iterable[str], alpha: float = 1.0) -> float:
    """The smallest CIEDE2000 difference between two of ``colors`` (each first tinted to ``alpha``)."""
    shown = [tint(color, alpha) for color in colors]
    return min(delta_e(a, b) for a, b in itertools.combinations(shown, 2))


def delta_e(first: str, second: str) -> float:
    """The CIEDE2000 colour difference of two hex colours (about 1: just noticeable; over 10: clearly different)."""
    return delta_e_lab(_lab(first), _lab(second))


def delta_e_lab(first: tuple[float, float, float], second: tuple[float, float, float]) -> float:
    """CIEDE2000 (Sharma, Wu & Dalal 2005) between two CIELAB colours."""
    (l1, a1, b1), (l2, a2, b2) = first, second
    c_mean = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_mean**7 / (c_mean**7 + 25**7)))
    a1, a2 = (1 + g) * a1, (1 + g) * a2
    c1, c2 = math.hypot(a1, b1), math.hypot(a2, b2)
    h1, h2 = math.degrees(math.atan2(b1, a1)) % 360, math.degrees(math.atan2(b2, a2)) % 360
    dh = 0.0 if c1 * c2 == 0 else (h2 - h1 + 180) % 360 - 180
    d_l, d_c, d_h = l2 - l1, c2 - c1, 2 * math.sqrt(c1 * c2) * math.sin(math.radians(dh / 2))
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    if c1 * c2 == 0:
        h_mean = h1 + h2
    elif abs(h1 - h2) <= 180:
        h_mean = (h1 + h2) / 2
    else:
        h_mean = (h1 + h2 + 360) / 2 if h1 + h2 < 360 else (h1 + h2 - 360) / 2
    t = (
        1
        - 0.17 * math.cos(math.radians(h_mean - 30))
        + 0.24 * math.cos(math.radians(2 * h_mean))
        + 0.32 * math.cos(math.radians(3 * h_mean + 6))
        - 0.20 * math.cos(math.radians(4 * h_mean - 63))
    )
    rotation = (
        -math.sin(math.radians(60 * math.exp(-(((h_mean - 275) / 25) ** 2))))
        * 2
        * math.sqrt(c_mean**7 / (c_mean**7 + 25**7))
    )
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / math.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_mean, 1 + 0.015 * c_mean * t
    return math.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + rotation * (d_c / s_c) * (d_h / s_h))


def _rgb(color: str) -> tuple[float, float, float]:
    digits = color.removeprefix("#")
    if len(digits) != 6:
        raise ValueError(f"Expected a colour as #rrggbb, got {color!r}.")
    return int(digits[0:2], 16) / 255, int(digits[2:4], 16) / 255, int(digits[4:6], 16) / 255


def _lab(color: str) -> tuple[float, float, float]:
    """CIELAB (D65) of an sRGB hex colour."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in _rgb(color)]
    r, g, b = linear
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)
