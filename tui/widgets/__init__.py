"""Widgets of the accmon app. Charts and heat maps use the line API over the store, testable without an app."""

from .alerts import AlertTable, alert_detail, severity_text
from .chart import BaselineOverlay, ChartSpec, LineChart, SeriesSpec, View, render_chart
from .header import HeaderInfo, RunHeader, header_text
from .heatmap import HeatSpec, LayerHeatMap, render_heatmap
from .summary import summary_text
from .system import system_text
from .timeline import Timeline, TimelineState, render_timeline

__all__ = [
    "AlertTable", "BaselineOverlay", "ChartSpec", "HeaderInfo", "HeatSpec", "LayerHeatMap", "LineChart", "RunHeader", "SeriesSpec",
    "Timeline", "TimelineState", "View", "alert_detail", "header_text", "severity_text", "render_chart", "render_heatmap",
    "render_timeline", "summary_text", "system_text",
]
