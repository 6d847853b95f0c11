"""Figures drawn with PIL: reconstruction grids of any method (``grid``) and training curves of a run (``plots``)."""

from mimzoo.viz.grid import (
    grid_columns,
    image_files,
    load_method,
    load_views,
    reconstruct,
    reconstruction_grid,
    visualize,
)
from mimzoo.viz.plots import curve_panels, plot_run

__all__ = [
    "curve_panels",
    "grid_columns",
    "image_files",
    "load_method",
    "load_views",
    "plot_run",
    "reconstruct",
    "reconstruction_grid",
    "visualize",
]
