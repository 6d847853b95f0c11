"""What --help and the progress output show: choices, defaults, flags, completion; bars on a terminal, lines off it."""

import io
import os
import pty
import subprocess
import sys

import pytest
import typer
from rich.console import Console
from rich.text import Text

from conftest import tiny_pretrain_args
from mimzoo.engine.report import Reported
from mimzoo_cli import choices
from mimzoo_cli.progress import RichReporter


def test_choices_match_the_library():
    from mimzoo.data.transforms import VIEWS
    from mimzoo.degradations import DEGRADATIONS
    from mimzoo.engine.features import POOLS
    from mimzoo.engine.linprobe import MODES, OPTIMIZERS
    from mimzoo.hub.importers import FORMATS
    from mimzoo.methods import METHODS

    def names(enum):
        return [c.value for c in enum]

    targets = {t for spec in METHODS.values() for t in spec.targets}
    assert names(choices.Method) == list(METHODS) and names(choices.Crop) == list(VIEWS)
    assert set(names(choices.Target)) == targets and names(choices.Degradation) == list(DEGRADATIONS)
    assert names(choices.Pool) == list(POOLS)
    assert names(choices.ProbeMode) == list(MODES) and names(choices.ProbeOptimizer) == list(OPTIMIZERS)
    assert names(choices.ImportFormat) == list(FORMATS)


@pytest.mark.parametrize("command", ["pretrain", "knn", "linprobe", "finetune", "segment", "visualize", "plot",
                                     "export", "zoo build"])
def test_help_shows_defaults_and_no_bool_metavar(cli, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "200")
    result = cli(*command.split(), "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    if command == "pretrain":
        for default in ("[default: 400]", "[default: vit_base_patch16_224]", "[default: mae]", "[default: 0.05]",
                        "the recipe's 40; localmim 10 for runs of at most 100"):
            assert default in result.output


@pytest.mark.parametrize("args,named", [
    (["pretrain", "--data", ""], "'--data'"),
    (["pretrain", "--demo", "--out="], "'--out'"),
    (["knn", "random:vit_tiny_patch4_32", "--data", ""], "'--data'"),
    (["visualize", ""], "an argument"),
    (["pull", "org/name", "--backend-dir", ""], "'--backend-dir'"),
    (["zoo", "build", "--root", ""], "'--root'"),
])
def test_an_empty_value_is_refused_before_any_work(cli, tmp_path, monkeypatch, args, named):
    monkeypatch.chdir(tmp_path)  # as a path, '' would be the current folder
    result = cli(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    said = " ".join(result.output.replace("│", " ").split())  # rich's error panel wraps the line
    assert f"Invalid value for {named}" in said and "it is empty; give it a value or leave it out" in said
    assert list(tmp_path.iterdir()) == []


def test_shell_completion_is_offered(cli):
    assert "--install-completion" in cli("--help").output


def test_off_a_terminal_each_log_step_is_a_plain_line_and_a_phase_without_numbers_each_tenth():
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=False, width=200))
    reporter.start(40, 0, "finetune")
    for step in range(1, 41):
        reporter.update(step, {"loss": 1.0 / step, "lr": 1e-3} if step % 20 == 0 else {})
        if step == 20:  # an evaluation inside training: its own phase, 30 batches
            with Reported(range(30), reporter, "evaluate val") as batches:
                list(batches)
    reporter.stop()
    assert out.getvalue().splitlines() == [
        "finetune 4/40", "finetune 8/40", "finetune 12/40", "finetune 16/40",  # no numbers yet: each tenth
        "finetune 20/40 loss 0.0500 lr 1.00e-03",
        *(f"evaluate val {3 * k}/30" for k in range(1, 11)),
        "finetune 40/40 loss 0.0250 lr 1.00e-03",  # once numbers come, only the steps that log them
    ]
    assert reporter.phases == []


def test_on_a_terminal_a_nested_phase_has_its_bar_until_it_ends():
    reporter = RichReporter(Console(file=io.StringIO(), force_terminal=True, width=120))
    reporter.start(10, 0, "segment")
    reporter.update(5, {"loss": 1.0})
    with pytest.raises(KeyboardInterrupt), Reported(range(3), reporter, "evaluate test") as batches:
        for _ in batches:
            assert [task.description for task in reporter.progress.tasks] == ["segment", "evaluate test"]
            raise KeyboardInterrupt  # a stop mid-evaluation ends its phase at once
    assert [task.description for task in reporter.progress.tasks] == ["segment"]
    reporter.update(10, {})
    assert reporter.progress.tasks[0].completed == 10
    reporter.stop()
    assert reporter.progress is None


def test_on_a_terminal_each_bar_is_its_own():
    reporter = RichReporter(Console(file=io.StringIO(), force_terminal=True, width=120))
    for description in ("features", "features", "linear probe"):
        reporter.start(8, 0, description)
        reporter.update(8, {})
        assert [task.description for task in reporter.progress.tasks] == [description]  # earlier bars not redrawn
        reporter.stop()


def _with_stderr_on_a_terminal(*args) -> tuple[subprocess.CompletedProcess, str]:
    """``mimzoo ARGS | tee log`` from a terminal: stdout is a pipe, stderr still the terminal (a pseudo-terminal)."""
    terminal, user_side = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "mimzoo", *map(str, args)], stdout=subprocess.PIPE,
                                stderr=user_side, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
        os.close(user_side)
        said = b""
        while chunk := _read_or_none(terminal):
            said += chunk
        return result, said.decode()
    finally:
        os.close(terminal)


def _read_or_none(fd: int) -> bytes | None:
    try:
        return os.read(fd, 65536)
    except OSError:  # Linux reports a pseudo-terminal whose other side closed as EIO
        return None


def test_piped_to_tee_the_log_lines_and_results_reach_the_pipe_and_errors_the_terminal(npz_pack, tmp_path):
    result, terminal = _with_stderr_on_a_terminal(*tiny_pretrain_args(npz_pack, tmp_path / "r", "--log-every", "2"))
    assert result.returncode == 0, terminal
    steps = [line.split(" loss ")[0] for line in result.stdout.splitlines() if line.startswith("pretrain ")]
    assert steps == ["pretrain 2/5", "pretrain 4/5", "pretrain 5/5"]  # plain lines, in the pipe; no bar on the terminal
    assert "effective batch" in result.stdout and "export" in result.stdout and terminal.strip() == ""
    result, terminal = _with_stderr_on_a_terminal(*tiny_pretrain_args(npz_pack, tmp_path / "bad", "--mask-ratio",
                                                                       "0.999"))
    assert result.returncode == 1 and result.stdout == "" and terminal.startswith("error: ")


def test_help_texts_say_what_they_are_written_with():
    """Help is rich markup: a bracket that reads as a tag (``[@REV]``) would vanish from --help unless escaped."""
    from mimzoo_cli.app import app

    def commands(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from commands(sub)

    for command in commands(typer.main.get_command(app)):
        for param in command.params:
            if param.help:
                assert Text.from_markup(param.help).plain == param.help.replace("\\[", "["), (command.name, param.name)
