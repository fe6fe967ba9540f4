"""The flag layer: command line over environment over default, for every kind of flag."""

from __future__ import annotations

import pytest

from scaler.common.flags import ConfigError, FlagParser, env_name, positive_int


def parser() -> FlagParser:
    flags = FlagParser(prog="test")
    flags.add_flag("--count", type=positive_int, default=3)
    flags.add_flag("--mode", choices=["a", "b"], default="a")
    flags.add_flag("--verbose", action="store_true")
    flags.add_flag("--item", action="append", type=positive_int)
    return flags


def test_flags_are_declared_with_their_kind_and_variable() -> None:
    declared = {flag.flag: (flag.kind, flag.env) for flag in parser().flags()}
    assert declared == {
        "--count": ("value", "TURNSCALE_COUNT"),
        "--mode": ("value", "TURNSCALE_MODE"),
        "--verbose": ("switch", "TURNSCALE_VERBOSE"),
        "--item": ("list", "TURNSCALE_ITEM"),
    }
    assert env_name("--min-replicas") == "TURNSCALE_MIN_REPLICAS"


def test_defaults_then_environment_then_command_line() -> None:
    args = parser().parse_flags([], {})
    assert (args.count, args.mode, args.verbose, args.item) == (3, "a", False, [])
    env = {"TURNSCALE_COUNT": "7", "TURNSCALE_VERBOSE": "yes", "TURNSCALE_ITEM": "1, 2,,3"}
    args = parser().parse_flags([], env)
    assert (args.count, args.verbose, args.item) == (7, True, [1, 2, 3])
    args = parser().parse_flags(["--count", "9", "--item", "5"], env)
    # The command line replaces a repeatable flag's environment list, it does not append.
    assert (args.count, args.item) == (9, [5])
    args = parser().parse_flags(["--item", "5", "--item", "6"], {})
    assert args.item == [5, 6]


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        ([], {"TURNSCALE_COUNT": "0"}, "TURNSCALE_COUNT"),
        ([], {"TURNSCALE_VERBOSE": "maybe"}, "TURNSCALE_VERBOSE"),
        ([], {"TURNSCALE_MODE": "c"}, "TURNSCALE_MODE"),
        ([], {"TURNSCALE_ITEM": "1,x"}, "TURNSCALE_ITEM"),
        (["--count", "-1"], {}, "--count"),
        (["--mode", "c"], {}, "--mode"),
        (["--nope"], {}, "--nope"),
    ],
)
def test_a_bad_value_names_its_flag_or_variable(
    argv: list[str], env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        parser().parse_flags(argv, env)


def test_an_unsupported_action_is_refused_at_declaration() -> None:
    with pytest.raises(TypeError, match="count"):
        FlagParser(prog="test").add_flag("--n", action="count")
