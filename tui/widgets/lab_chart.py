"""A lab chart in the app: `tui.lab.chart.plot`'s character grid drawn at the widget's size,
each series in its own colour, with a legend line under it. It redraws itself on resize."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget

from tui.lab.chart import GUTTER, ChartSeries, plot

# Tableau 10: colours that stay apart from one another on dark and light themes.
SERIES_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7")
AXIS_STYLE = "dim"
MIN_PLOT_HEIGHT, MIN_PLOT_WIDTH = 4, 20  # below these a chart says nothing useful


def series_style(index: int) -> str:
    return SERIES_COLOURS[index % len(SERIES_COLOURS)]


class LabChart(Widget):
    DEFAULT_CSS = """
    LabChart {
        height: 1fr;
        min-height: 6;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.series: list[ChartSeries] = []
        self.models: list[dict[str, Any]] = []  # the lab header's model records: id, name, params

    def show(self, series: list[ChartSeries], models: list[dict[str, Any]]) -> None:
        self.series, self.models = series, models
        self.refresh()

    def legend(self) -> Text:
        legend = Text(no_wrap=True, overflow="ellipsis")
        for index, one in enumerate(self.series):
            if index:
                legend.append("   ")
            legend.append(f"{one.marker} {one.label}", style=series_style(index))
        return legend

    def render(self) -> Text:
        width, height = self.content_size
        if not any(value is not None for one in self.series for _, value in one.points):
            return Text("no scores yet: the chart fills in as rows come", style=AXIS_STYLE)
        # Below the plot: its axis, one or two rows of model names, the legend.
        plot_height = height - 3
        if plot_height < MIN_PLOT_HEIGHT or width - GUTTER < MIN_PLOT_WIDTH:
            return Text("(too little room for the chart)", style=AXIS_STYLE)
        grid = plot(self.series, self.models, width - GUTTER, plot_height)
        if len(grid) > plot_height + 2:  # the names took two rows
            grid = plot(self.series, self.models, width - GUTTER, plot_height - 1)
        chart = Text(no_wrap=True, overflow="crop")
        for row in grid:
            for char, index in row:
                chart.append(char, style=AXIS_STYLE if index is None else series_style(index))
            chart.append("\n")
        chart.append_text(self.legend())
        return chart
