"""``python -m mimzoo`` (and ``torchrun -m mimzoo``): the one place the library reaches for the CLI."""

from mimzoo_cli.app import app

if __name__ == "__main__":
    app(prog_name="mimzoo")
