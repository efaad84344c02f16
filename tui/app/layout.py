"""The app's panels: which chart and heat map shows what, which tab holds which widget, and the tabs' layout."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static, TabbedContent, TabPane

from ..widgets import AlertTable, ChartSpec, HeatSpec, LayerHeatMap, LineChart, SeriesSpec

CHARTS: dict[str, ChartSpec] = {
    "chart-acc": ChartSpec("accuracy", (SeriesSpec("acc", "train", 0), SeriesSpec("val_acc", "val", 1)), unit_range=True),
    "chart-loss": ChartSpec("loss", (SeriesSpec("loss", "train", 0), SeriesSpec("val_loss", "val", 1))),
    "chart-grad": ChartSpec("gradient norm", (SeriesSpec("grad_norm", "global", 2),), log=True),
    "chart-lr": ChartSpec("learning rate", (SeriesSpec("lr", "lr", 3),), log=True, smooth=False),
    "chart-grad2": ChartSpec("gradient norm", (SeriesSpec("grad_norm", "global", 2),
                                               SeriesSpec("nonfinite_grads", "non-finite", 5)), log=True),
    "chart-update": ChartSpec("update ratio ‖Δw‖/‖w‖", (SeriesSpec("update_ratio", "all layers", 3),), log=True),
    "chart-lr2": ChartSpec("learning rate", (SeriesSpec("lr", "lr", 3),), log=True, smooth=False),
    "chart-input": ChartSpec("input batch", (SeriesSpec("input_mean", "mean", 0), SeriesSpec("input_std", "std", 1)),
                             smooth=False),
    "chart-time": ChartSpec("seconds per step · of which waiting for data",
                            (SeriesSpec("step_time", "step", 0), SeriesSpec("data_wait", "data wait", 1)), log=True),
    "chart-rate": ChartSpec("throughput", (SeriesSpec("samples_per_s", "samples/s", 2),
                                           SeriesSpec("tokens_per_s", "tokens/s", 3)), log=True),
    "chart-mem": ChartSpec("memory, bytes", (SeriesSpec("rss", "process RSS", 0), SeriesSpec("cuda_allocated", "GPU allocated", 2),
                                             SeriesSpec("cuda_reserved", "GPU reserved", 3)), smooth=False),
    "chart-gpu": ChartSpec("GPU (NVML)", (SeriesSpec("gpu_util", "util %", 0), SeriesSpec("gpu_temp", "°C", 1),
                                          SeriesSpec("gpu_power", "W", 2)), smooth=False),
}
HEATS: dict[str, HeatSpec] = {
    "heat-grad": HeatSpec("gradient norm per layer · blue: vanishing · orange: exploding", "grad_norm/"),
    "heat-dead": HeatSpec("dead fraction per layer (outputs exactly 0)", "act_zero/", log=False, reduce="mean"),
    "heat-sat": HeatSpec("saturated fraction per layer (outputs at the activation's limits)", "act_sat/", log=False,
                         reduce="mean"),
}
# Widgets that show gradient norms: for a sharded model (FSDP) they read the norms combined across ranks.
SHARDED_WIDGETS = frozenset({"chart-grad", "chart-grad2", "heat-grad"})
TAB_WIDGETS = {
    "overview": ("chart-acc", "chart-loss", "chart-grad", "chart-lr"),
    "gradients": ("chart-grad2", "heat-grad", "chart-update"),
    "activations": ("heat-dead", "heat-sat", "chart-lr2"),
    "data": ("chart-input",),
    "alerts": (),
    "system": ("chart-time", "chart-rate", "chart-mem", "chart-gpu"),
}
# What each tab shows, in the command palette's words (keys 1-6 in this order).
TAB_NOTES = (("overview", "accuracy, loss, gradients, learning rate, alerts"),
             ("gradients", "per-layer gradient norms, update ratio"),
             ("activations", "dead and saturated fractions per layer"),
             ("data", "the model, loss, optimizer, inputs and labels"),
             ("alerts", "every alert with its fix and evidence"),
             ("system", "step time and data wait, throughput, memory, GPU"))


def compose_tabs() -> ComposeResult:
    """The six tabs and their panels (inside the app's `compose`, between the header and the timeline)."""
    with TabbedContent(initial="overview", id="tabs"):
        with TabPane("1 Overview", id="overview"):
            with Horizontal(id="overview-body"):
                with Vertical(id="overview-charts"):
                    with Horizontal(classes="chart-row"):
                        yield LineChart(CHARTS["chart-acc"], id="chart-acc")
                        yield LineChart(CHARTS["chart-loss"], id="chart-loss")
                    with Horizontal(classes="chart-row", id="overview-row2"):
                        yield LineChart(CHARTS["chart-grad"], id="chart-grad")
                        yield LineChart(CHARTS["chart-lr"], id="chart-lr")
                with Vertical(id="overview-side"):
                    yield AlertTable(id="side-alerts")
                    with VerticalScroll(id="side-detail-box"):
                        yield Static(id="side-detail")
        with TabPane("2 Gradients", id="gradients"):
            with Vertical():
                yield LineChart(CHARTS["chart-grad2"], id="chart-grad2")
                yield LayerHeatMap(HEATS["heat-grad"], id="heat-grad")
                yield LineChart(CHARTS["chart-update"], id="chart-update")
        with TabPane("3 Activations", id="activations"):
            with Vertical():
                yield LayerHeatMap(HEATS["heat-dead"], id="heat-dead")
                yield LayerHeatMap(HEATS["heat-sat"], id="heat-sat")
                yield LineChart(CHARTS["chart-lr2"], id="chart-lr2")
        with TabPane("4 Data", id="data"):
            with Horizontal():
                with VerticalScroll(id="summary-box"):
                    yield Static(id="summary")
                yield LineChart(CHARTS["chart-input"], id="chart-input")
        with TabPane("5 Alerts", id="alerts"):
            with Horizontal():
                yield AlertTable(id="alert-table")
                with VerticalScroll(id="detail-box"):
                    yield Static(id="alert-detail")
        with TabPane("6 System", id="system"):
            with Vertical():
                yield Static(id="system-note")
                with Horizontal(classes="chart-row"):
                    yield LineChart(CHARTS["chart-time"], id="chart-time")
                    yield LineChart(CHARTS["chart-rate"], id="chart-rate")
                with Horizontal(classes="chart-row"):
                    yield LineChart(CHARTS["chart-mem"], id="chart-mem")
                    yield LineChart(CHARTS["chart-gpu"], id="chart-gpu")
