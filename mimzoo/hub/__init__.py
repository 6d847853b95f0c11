"""Exports in timm's Hub layout, their model cards, push/pull backends and the one backbone resolver."""

from mimzoo.hub.backends import HfHubBackend, LocalDirBackend, pull, push, zoo_status
from mimzoo.hub.card import TASKS, add_result
from mimzoo.hub.export import export_run, load_pretrainer
from mimzoo.hub.resolve import BackboneInfo, load_backbone, locate_backbone

__all__ = [
    "TASKS",
    "BackboneInfo",
    "HfHubBackend",
    "LocalDirBackend",
    "add_result",
    "export_run",
    "load_backbone",
    "load_pretrainer",
    "locate_backbone",
    "pull",
    "push",
    "zoo_status",
]
