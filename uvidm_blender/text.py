"""Messages wrapped to the width they are drawn at, measured with Blender's UI font (blf)."""

from collections.abc import Callable

# Space a label loses inside a sidebar panel and box: the region's and panel's margins, the box's
# padding and the icon in front of the text (pixels at a UI scale of 1).
LABEL_MARGIN = 58
FALLBACK_CHAR_WIDTH = 7.5  # pixels a character takes at scale 1 when blf cannot measure


def wrap(text: str, width: float, measure: Callable[[str], float]) -> list[str]:
    """Lines of `text` no wider than `width` (by `measure`); words are kept whole unless one alone is wider."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if measure(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while measure(word) > width and len(word) > 1:  # a path or URL longer than the panel
                cut = len(word) - 1
                while cut > 1 and measure(word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def ui_measure(context) -> Callable[[str], float]:
    """Width in pixels of a text in the UI's label font at the current UI scale."""
    scale = context.preferences.view.ui_scale
    try:
        import blf

        style = context.preferences.ui_styles[0]
        points = getattr(getattr(style, "widget", None), "points", 11.0)
        blf.size(0, points * scale)
        if blf.dimensions(0, "abc")[0] > 0:
            return lambda text: blf.dimensions(0, text)[0]
    except (ImportError, AttributeError, IndexError):
        pass
    return lambda text: len(text) * FALLBACK_CHAR_WIDTH * scale


def label_width(context, width: float | None = None) -> float:
    """The room a label has in the current region (or in a region `width` pixels wide)."""
    if width is None:
        width = context.region.width if context.region is not None else 300
    return max(40.0, width - LABEL_MARGIN * context.preferences.view.ui_scale)


def wrapped_label(layout, context, text: str, icon: str = "NONE", width: float | None = None) -> None:
    """Labels, one per line, that fit: Blender cuts a long label with '…' and the words are lost."""
    for index, line in enumerate(wrap(text, label_width(context, width), ui_measure(context))):
        layout.label(text=line, icon=icon if index == 0 else "BLANK1")

