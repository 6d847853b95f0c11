"""How ``--help`` renders options (a flag takes no value: no ``<bool>`` type) and the options commands share."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from mimzoo.engine.defaults import default_workers


def _without_flag_types(params: list) -> list:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: typer.Context) -> list:
        return _without_flag_types(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: typer.Context) -> list:
        return _without_flag_types(super().get_params(ctx))


# None: every command's rule, mimzoo.engine.defaults.default_workers (for pretrain: or the resumed run's)
Workers = Annotated[int | None, typer.Option(
    help="Data-loading worker processes per process.",
    show_default="min(8, usable CPU cores / processes per machine)")]


def workers_or_default(workers: int | None) -> int:
    return default_workers() if workers is None else workers
