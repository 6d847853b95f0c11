"""The mimzoo command-line application (Typer); ``mimzoo_cli.app:app`` is the console script."""
