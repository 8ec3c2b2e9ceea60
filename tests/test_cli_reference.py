"""Each option is declared once, on its config field: the flags of `vaegen train`, their help,
what a resume may change and docs/cli.md all come from that declaration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vaegen.cli import _parser, cli_reference
from vaegen.cli.options import SECTIONS, config_from_args
from vaegen.rundir.config import RunConfig, options, resumable_fields

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_docs_cli_md_is_what_the_parser_says():
    assert PAGE.read_text(encoding="utf-8") == cli_reference(), (
        "docs/cli.md is stale: run `make docs-cli`"
    )


def test_every_config_field_is_declared_as_an_option():
    for section, cls in SECTIONS.items():
        declared = {f.name for f, _ in options(cls)}
        assert declared == {f.name for f in dataclasses.fields(cls)}, section


def _other_value(field: dataclasses.Field, choices) -> tuple[list[str], object]:
    """Command-line words that set `field` to a value other than its default, and that value."""
    kind = str(field.type)
    if kind == "bool":
        return [], True
    if choices is not None:
        value = next(c for c in choices if c != field.default and c != "seed")
        return [str(value)], value
    if kind.startswith("int"):
        value = (field.default or 0) + 3
    elif kind.startswith("float"):
        value = 0.25 if field.default != 0.25 else 0.5
    else:
        value = "elsewhere"
    return [str(value)], value


@pytest.mark.parametrize(
    "section,name",
    [(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)],
)
def test_each_train_flag_sets_its_own_field_and_no_other(section, name):
    parser = _parser()
    field, opt = next((f, o) for f, o in options(SECTIONS[section]) if f.name == name)
    flag = "--" + (opt.flag or name).replace("_", "-")
    words, value = _other_value(field, opt.choices)
    args = parser.parse_args(["train", flag, *words])
    config = config_from_args(args, RunConfig())
    assert getattr(getattr(config, section), name) == value
    changed = [
        f"{s}.{f}"
        for s in SECTIONS
        for f, v in dataclasses.asdict(getattr(config, s)).items()
        if v != dataclasses.asdict(getattr(RunConfig(), s))[f]
    ]
    assert changed == [f"{section}.{name}"]


def test_what_a_resume_may_change_is_pinned():
    """Where a resumed run may differ from the saved one: where and how fast it runs, how long,
    and the prior fitted after the last epoch. Anything else changes what was trained."""
    assert sorted(resumable_fields()) == sorted(
        [
            "train.device",
            "train.threads",
            "train.epochs",
            "train.deterministic",
            "train.step",
            "train.prior_components",
            "train.prior_draws",
            "train.prior_reg_covar",
        ]
    )
    help_text = _parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--resume may change it" in help_text
