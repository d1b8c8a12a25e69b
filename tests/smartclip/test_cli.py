from dataclasses import dataclass, field

import pytest

from smartclip.cli import config_to_argv, parse_config, require


@dataclass(frozen=True)
class Demo:
    steps: int = field(default=10, metadata={"help": "how many"})
    lr: float = 1e-3
    name: str = "a"
    flag: bool = False
    dims: tuple[int, ...] = (2, 2)
    groups: tuple[tuple[int, ...], ...] = ()
    cap: int | None = None

    def __post_init__(self):
        require(self.steps > 0, "steps", f"must be positive, got {self.steps}")


PRESETS = {"long": {"steps": 100, "flag": True}}


def test_every_field_is_a_flag_with_typed_values():
    cfg = parse_config(
        Demo,
        [
            "--steps",
            "5",
            "--lr",
            "0.1",
            "--name",
            "b",
            "--flag",
            "--dims",
            "1,2,3",
            "--groups",
            "0,1;2",
            "--cap",
            "7",
        ],
    )
    assert cfg == Demo(5, 0.1, "b", True, (1, 2, 3), ((0, 1), (2,)), 7)
    assert parse_config(Demo, ["--cap", "none"]).cap is None


def test_negative_values_follow_their_flag_with_or_without_equals():
    """argparse alone reads "-1,0,2" as an unknown flag; a list or number starting with a minus
    sign is the value of the flag before it."""
    cfg = parse_config(Demo, ["--dims", "-1,0,2", "--lr", "-0.5", "--flag"])
    assert cfg.dims == (-1, 0, 2) and cfg.lr == -0.5 and cfg.flag
    assert parse_config(Demo, ["--dims=-3", "--groups", "-1;2"]).groups == ((-1,), (2,))


def test_a_negative_value_still_meets_validation(one_line_error):
    one_line_error(lambda argv: parse_config(Demo, argv), ["--steps", "-5"], "--steps")


def test_preset_then_flags_override():
    assert parse_config(Demo, ["--preset", "long"], PRESETS) == Demo(steps=100, flag=True)
    assert parse_config(Demo, ["--preset", "long", "--no-flag"], PRESETS) == Demo(100, flag=False)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--steps", "0"], "--steps: must be positive"),
        (["--steps", "x"], "--steps"),
        (["--dims", "1,b"], "--dims"),
        (["--preset", "nope"], "--preset"),
        (["--unknown", "1"], "--unknown"),
        (["--step", "5"], "--step"),  # abbreviations of --steps are misspellings, not --steps
        (["--fla"], "--fla"),
    ],
)
def test_errors_are_one_line_and_exit_2(argv, needle, one_line_error):
    one_line_error(lambda a: parse_config(Demo, a, PRESETS), argv, needle)


def test_help_states_each_default_once(capsys):
    with pytest.raises(SystemExit):
        parse_config(Demo, ["--help"], PRESETS)
    text = " ".join(capsys.readouterr().out.split())
    assert "how many (default: 10)" in text and "(default: None) (default" not in text
    assert text.count("(default:") == 7  # one per field; --preset and --help have none


@pytest.mark.parametrize(
    "cfg",
    [
        Demo(),
        Demo(5, 0.1, "b c", True, (1, 2, 3), ((0, 1), (2,)), 7),
        Demo(groups=((0,), (1, 2))),
        Demo(dims=()),
    ],
)
def test_config_to_argv_rebuilds_the_config(cfg):
    argv = config_to_argv(cfg)
    assert parse_config(Demo, argv) == cfg
    assert len(argv) <= 2 * sum(getattr(cfg, f) != getattr(Demo(), f) for f in vars(Demo()))


def test_config_to_argv_turns_a_true_default_off():
    @dataclass(frozen=True)
    class On:
        on: bool = True

    assert config_to_argv(On(on=False)) == ["--no-on"]
    assert parse_config(On, config_to_argv(On(on=False))) == On(on=False)
