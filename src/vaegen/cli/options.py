"""Config fields as command-line flags: every flag of `vaegen train` (and the data and mixture
flags `vaegen data info` and `vaegen fit-prior` share with it) is built from the field's own
declaration in rundir.config (`option`), and read back into a config here; the reference page
docs/cli.md is written from the same parser (`reference`)."""

from __future__ import annotations

import argparse
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from ..rundir.config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig, options

SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float}


def add_config_flags(
    parser: argparse.ArgumentParser,
    section: str,
    *,
    only: Collection[str] | None = None,
    strip: str = "",
    default_text: str | None = None,
    resumable_note: bool = False,
) -> None:
    """Add a flag per option field of config section `section` ("data", "model", "train"), or of
    the fields in `only`. Each flag's value lands in args as "SECTION.FIELD", None when not
    given (the config's value stands). strip: a prefix left out of flag names (fit-prior's
    --components for train's --prior-components); default_text: what every help says of the
    default instead of the field's own; resumable_note: say which flags --resume may change."""
    cls = SECTIONS[section]
    synth = getattr(PRESETS["synth"], section)
    for f, opt in options(cls):
        if only is not None and f.name not in only:
            continue
        help_text = opt.help() if callable(opt.help) else opt.help
        help_text = help_text.replace("{synth}", _shown(getattr(synth, f.name)))
        said = opt.default_text if default_text is None else default_text
        if said is None:  # a switch says nothing of its default: off
            said = "" if str(f.type) == "bool" else _shown(f.default)
        if said:
            help_text += f" (default {said})" if default_text is None else f" ({said})"
        if resumable_note and opt.resumable:
            help_text += "; --resume may change it"
        name = opt.flag or f.name.removeprefix(strip)
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f"{section}.{f.name}", "help": help_text}
        if str(f.type) == "bool":
            kwargs.update(action="store_true", default=None)
        else:
            kwargs.update(type=_TYPES.get(str(f.type), str), default=None)
            if opt.choices is not None:
                kwargs["choices"] = opt.choices
            if opt.choices is None or opt.metavar is not None:
                kwargs["metavar"] = opt.metavar or name.upper()
        parser.add_argument(flag, **kwargs)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def given(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The fields of `section` whose flags were given: {field: value}."""
    prefix = f"{section}."
    return {
        dest.removeprefix(prefix): value
        for dest, value in vars(args).items()
        if dest.startswith(prefix) and value is not None
    }


def config_from_args(args: argparse.Namespace, base: RunConfig) -> RunConfig:
    """`base` with every config flag the user gave applied to its field."""
    return RunConfig(**{s: replace(getattr(base, s), **given(args, s)) for s in SECTIONS})


def reference(parser: argparse.ArgumentParser) -> str:
    """docs/cli.md: every command of `parser` with its arguments, as Markdown tables (built from
    the parser's actions, so the page reads the same under every Python version)."""
    out = [
        "# Command-line reference",
        "",
        "Generated from vaegen's argument parser by `make docs-cli`; a test checks that this "
        "page is what the parser says. Every flag of `vaegen train` is a field of the run's "
        "config (config.json), declared once in `src/vaegen/rundir/config.py`.",
    ]
    _describe(parser, "vaegen", out)
    return "\n".join(out) + "\n"


def _describe(
    parser: argparse.ArgumentParser, name: str, out: list[str], summary: str | None = None
) -> None:
    sub = None
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action
        elif not isinstance(action, argparse._HelpAction):
            rows.append(action)
    out += ["", f"{'#' * min(name.count(' ') + 2, 4)} `{name}`", ""]
    if parser.description or summary:
        out += [parser.description or summary[0].upper() + summary[1:] + ".", ""]
    if rows:
        out += ["| argument | value | what it does |", "| --- | --- | --- |"]
        for a in rows:
            names = ", ".join(f"`{o}`" for o in a.option_strings) or f"`{a.metavar or a.dest}`"
            if a.choices is not None and not isinstance(a, argparse._SubParsersAction):
                value = " \\| ".join(f"`{c}`" for c in a.choices)
            elif a.nargs == 0:
                value = ""
            else:
                value = f"`{a.metavar or a.dest.split('.')[-1].upper()}`"
            required = " (required)" if a.required and a.option_strings else ""
            text = (a.help or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| {names} | {value} | {text}{required} |")
    if parser.epilog:
        out += ["", parser.epilog]
    if sub is not None:
        helps = {c.dest: c.help for c in sub._choices_actions}
        for command, child in sub.choices.items():
            _describe(child, f"{name} {command}", out, helps.get(command))
