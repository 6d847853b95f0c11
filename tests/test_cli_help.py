"""What --help and the progress output show: choices, defaults, flags, completion; bars on a terminal, lines off it."""

import io

import pytest
from rich.console import Console

from mimzoo.engine.report import Reported
from mimzoo_cli import choices
from mimzoo_cli.progress import RichReporter


def test_choices_match_the_library():
    from mimzoo.data.transforms import VIEWS
    from mimzoo.degradations import DEGRADATIONS
    from mimzoo.engine.features import POOLS
    from mimzoo.engine.linprobe import MODES, OPTIMIZERS
    from mimzoo.methods import METHODS

    def names(enum):
        return [c.value for c in enum]

    targets = {t for spec in METHODS.values() for t in spec.targets}
    assert names(choices.Method) == list(METHODS) and names(choices.Crop) == list(VIEWS)
    assert set(names(choices.Target)) == targets and names(choices.Degradation) == list(DEGRADATIONS)
    assert names(choices.Pool) == list(POOLS)
    assert names(choices.ProbeMode) == list(MODES) and names(choices.ProbeOptimizer) == list(OPTIMIZERS)


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
