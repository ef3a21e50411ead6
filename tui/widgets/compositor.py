"""Textual's compositor, made to draw for a partial update only the widgets in it.

For a partial update (a few changed lines), Textual 8.2 draws again every widget whose
*container* overlaps the changed lines, which for a widget placed in the screen or in a
pane is every widget on screen, though only the changed lines are then used: 34 widgets
a frame with four panes streaming, each 60 to 90 µs on the development machine, most of
the app's CPU while models write. `CroppedCompositor` draws only the rows that changed, of
the widgets visible there, and skips a widget hidden behind those in front of it (a
container behind what it holds): the frontmost widget of a cell is the one Textual shows.
tests/test_compositor.py checks every update it draws against the whole screen drawn by
Textual's own.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual._compositor import Compositor
from textual.geometry import Region
from textual.strip import Strip


class CroppedCompositor(Compositor):
    def _get_renders(self, crop: Region | None = None) -> Iterable[tuple[Region, Region, list[Strip]]]:
        if crop is None:
            yield from super()._get_renders(crop)
            return
        top, bottom = crop.y, crop.bottom
        in_front: list[Region] = []
        for widget, (region, clip) in self.visible_widgets.items():  # front to back
            shown = region.intersection(clip)
            # The rows of the widget in the update, drawn alone (as the clip, they place the lines drawn). Its
            # columns stay whole: Textual cuts a line where widgets start and end, and only there.
            drawn = Region.from_corners(shown.x, max(shown.y, top), shown.right, min(shown.bottom, bottom))
            if not drawn or not crop.overlaps(drawn):
                continue
            if hidden(drawn, in_front):
                continue  # behind widgets drawn already, as a container is behind what it holds
            in_front.append(drawn)
            yield region, drawn, widget.render_lines(drawn.translate(-region.offset))


def hidden(region: Region, in_front: list[Region]) -> bool:
    """Whether `region` is covered by the regions in front of it, side by side across its rows."""
    reach = region.x
    rows = [front for front in in_front if front.y <= region.y and front.bottom >= region.bottom]
    spans = sorted((front.x, front.right) for front in rows)
    for left, right in spans:
        if left > reach:
            break
        reach = max(reach, right)
    return reach >= region.right
