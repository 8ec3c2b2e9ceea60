"""The `vaegen data` command (fetch or verify a named dataset; what any data source holds) and
the data flags it shares with `vaegen train`: each flag is one field of config.DataConfig."""

from __future__ import annotations

import argparse

from ..data.splits import DEFAULT_TEST_FRACTION

CACHE_HELP = (
    "A decoded image folder is cached in $VAEGEN_CACHE_DIR/folders/ (default "
    "$XDG_CACHE_HOME/vaegen/folders/ or ~/.cache/vaegen/folders/), one entry per folder, and read "
    "from there while none of its files nor the options changed; VAEGEN_NO_CACHE=1 turns the "
    "cache off."
)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """--channels, --image-size, --test-fraction, --split-seed and --skip-bad (default None:
    the config's value)."""
    p.add_argument(
        "--channels", type=int, choices=(1, 3),
        help="convert every image to 1 channel (grey: Pillow's ITU-R 601 luma) or 3 (RGB; grey "
        "repeated). Default: as the images are, and a folder of grey and colour images gives "
        "colour",
    )  # fmt: skip
    p.add_argument(
        "--image-size", type=int, metavar="S",
        help="resize every image to S x S pixels (bilinear, aspect ratio not kept). Default: "
        "keep their size; images of different sizes are an error",
    )  # fmt: skip
    p.add_argument(
        "--test-fraction", type=float, metavar="F",
        help="for an .npz or image folder, which have no test split: hold out this fraction of "
        "each class (of all images, at random, when there are no labels) for testing (default "
        f"{DEFAULT_TEST_FRACTION:g}; 0: test on the training images). Named datasets and IDX "
        "folders keep their own test split",
    )  # fmt: skip
    p.add_argument(
        "--split-seed", type=int, metavar="N",
        help="seed of the held-out test split (default 0; apart from --seed, so runs with "
        "different seeds are tested on the same images)",
    )  # fmt: skip
    p.add_argument(
        "--skip-bad", action="store_true", default=None,
        help="leave unreadable image files out (with a warning naming the first) instead of "
        "stopping at the first",
    )  # fmt: skip


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
    info.add_argument("--data-dir", help="folder to look in first for a named dataset")
    add_data_flags(info)


def cmd_data(args: argparse.Namespace) -> int:
    from ..data import named

    if args.action == "fetch":
        print(named.fetch(args.name, args.data_dir))
    elif args.action == "verify":
        for path in named.verify(args.name, args.data_dir):
            print(f"ok  {path}")
    else:
        from ..data.info import info_lines

        lines = info_lines(
            args.source, args.data_dir, channels=args.channels, image_size=args.image_size,
            test_fraction=args.test_fraction, split_seed=args.split_seed or 0,
            skip_bad=bool(args.skip_bad),
        )  # fmt: skip
        print("\n".join(lines))
    return 0
