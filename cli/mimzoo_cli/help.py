"""How ``--help`` renders parameters (a flag takes no value: no ``<bool>`` type; an argument is named in capitals,
as in ``mimzoo knn BACKBONE``) and the options commands share."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from mimzoo.engine.defaults import default_workers


def _plain_metavars(params: list) -> list:
    for param in params:
        if param.metavar is not None:
            continue
        if isinstance(param, TyperArgument):
            param.metavar = param.name.upper()  # typer would write {backbone}
        elif getattr(param, "is_flag", False):
            param.metavar = ""
    return params


def _refuse_empty(command: TyperCommand, ctx: typer.Context, args: list[str]) -> None:
    """An empty value (``--out ''``, ``--data=``) is a slip, never a choice: as a path it would mean the current
    folder, as a spec nothing. Refused before parsing, while the option it was given to is still known."""
    options = {name: param for param in command.get_params(ctx)
               if isinstance(param, TyperOption) and not param.is_flag for name in param.opts}
    for i, arg in enumerate(args):
        if arg == "--":
            return
        name, eq, value = arg.partition("=")
        if arg == "":
            given_to = args[i - 1] if i else ""
        elif eq and not value and name in options:
            given_to = name
        else:
            continue
        raise typer.BadParameter("it is empty; give it a value or leave it out", ctx, options.get(given_to),
                                 param_hint=None if given_to in options else "an argument")


class Command(TyperCommand):
    def get_params(self, ctx: typer.Context) -> list:
        return _plain_metavars(super().get_params(ctx))

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        _refuse_empty(self, ctx, args)
        return super().parse_args(ctx, args)


class Group(TyperGroup):
    def get_params(self, ctx: typer.Context) -> list:
        return _plain_metavars(super().get_params(ctx))


# None: every command's rule, mimzoo.engine.defaults.default_workers (for pretrain: or the resumed run's)
Workers = Annotated[int | None, typer.Option(
    help="Data-loading worker processes per process.",
    show_default="min(8, usable CPU cores / processes per machine)")]


def workers_or_default(workers: int | None) -> int:
    return default_workers() if workers is None else workers
