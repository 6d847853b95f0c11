"""What --help and the progress output show: choices, defaults, flags, completion; bars on a terminal, lines off it."""

import io

import pytest
from rich.console import Console

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
                        "the recipe's 40, at most 0.25 x --epochs"):
            assert default in result.output


def test_shell_completion_is_offered(cli):
    assert "--install-completion" in cli("--help").output


def test_off_a_terminal_each_log_step_is_a_plain_line():
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=False, width=200))
    reporter.start(20, 0, "pretrain")
    for step in range(1, 21):
        reporter.update(step, {"loss": 1.0 / step, "lr": 1e-3} if step % 10 == 0 else {})
    reporter.stop()
    assert out.getvalue().splitlines() == ["pretrain 10/20 loss 0.1000 lr 1.00e-03",
                                           "pretrain 20/20 loss 0.0500 lr 1.00e-03"]


def test_on_a_terminal_each_bar_is_its_own():
    reporter = RichReporter(Console(file=io.StringIO(), force_terminal=True, width=120))
    for description in ("features", "features", "linear probe"):
        reporter.start(8, 0, description)
        reporter.update(8, {})
        assert [task.description for task in reporter.progress.tasks] == [description]  # earlier bars not redrawn
        reporter.stop()
