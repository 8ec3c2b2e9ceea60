"""The `vaegen data` command: fetch or verify a named dataset; what any data source holds, read
with the data flags of `vaegen train` (the fields of rundir.config.DataConfig)."""

from __future__ import annotations

import argparse

from ..rundir.config import DataConfig, options
from .options import add_config_flags, given

DATA_FLAGS = [f.name for f, _ in options(DataConfig)]

CACHE_HELP = (
    "A decoded image folder is cached in $VAEGEN_CACHE_DIR/folders/ (default "
    "$XDG_CACHE_HOME/vaegen/folders/ or ~/.cache/vaegen/folders/), one entry per folder, and read "
    "from there while none of its files nor the options changed; VAEGEN_NO_CACHE=1 turns the "
    "cache off."
)


def add_data_command(sub: argparse._SubParsersAction) -> None:
    da = sub.add_parser(
        "data", help="fetch or verify a named dataset; show what a data source holds"
    )
    actions = da.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, what in (("fetch", "download (if needed) and verify"), ("verify", "verify")):
        a = actions.add_parser(action, help=f"{what} a named dataset's files")
        a.add_argument("name", help="fashion-mnist or mnist")
        a.add_argument("--data-dir", help="folder to look in first")
    info = actions.add_parser(
        "info",
        help="what `vaegen train --data SOURCE` would load: kind, count, image shape, pixel "
        "range, classes with their counts, the train and test split, whether the folder cache "
        "was hit",
        epilog=CACHE_HELP,
    )
    info.add_argument("source", metavar="SOURCE", help="named dataset, IDX folder, .npz or folder")
    add_config_flags(info, "data", only=[f for f in DATA_FLAGS if f != "source"])


def cmd_data(args: argparse.Namespace) -> int:
    from ..data import named

    if args.action == "fetch":
        print(named.fetch(args.name, args.data_dir))
    elif args.action == "verify":
        for path in named.verify(args.name, args.data_dir):
            print(f"ok  {path}")
    else:
        from ..data.info import info_lines

        config = DataConfig(source=args.source, **given(args, "data"))
        lines = info_lines(config.source, **config.load_options())
        print("\n".join(lines))
    return 0
