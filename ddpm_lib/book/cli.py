"""The grader's command line: ``python -m ddpm_lib grade SUBMISSION.ipynb... [--out grades.csv]``.

The grader belongs to the book (it runs the chapters' exercises against their keys), and the library never
imports the book: ``grade`` joins ``python -m ddpm_lib`` through an entry point (group ``ddpm_lib.commands``
in pyproject.toml), which an installed package has. ``python -m ddpm_lib.book grade`` is the same command
without it (a source tree on PYTHONPATH). Errors are one line, as there: bad input exits 2, an interruption
128 + the signal.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Sequence

from ..cli import EXIT_FAILURE, EXIT_USAGE, Parser, UsageError, check_can_create, positive_int


def add_grade(sub) -> Parser:
    """Add ``grade`` to a command line's subparsers; ``python -m ddpm_lib`` calls it through its entry point
    (group ``ddpm_lib.commands`` in pyproject.toml), and :func:`build_parser` here."""
    grade = sub.add_parser("grade", help="grade students' notebooks (needs the 'grade' extra)",
                           description="Run each submitted notebook in a fresh kernel without network, its "
                                       "solution cells removed, and judge every exercise with the answer key "
                                       "(never what the notebook prints). One CSV row per student and exercise.")
    grade.add_argument("submissions", type=Path, nargs="+", metavar="SUBMISSION.ipynb",
                       help="the notebooks; a student is named by the file (or its folder, for a chapter's name)")
    grade.add_argument("--out", type=Path, default=None, help="write the verdicts to this CSV file")
    grade.add_argument("--timeout", type=positive_int, default=300,
                       help="seconds each notebook's cells may run in all (default 300)")
    grade.set_defaults(run=cmd_grade)
    return grade


def build_parser() -> Parser:
    from .. import __version__

    parser = Parser(prog="python -m ddpm_lib.book", description="The book's tools for teachers.")
    parser.add_argument("--version", action="version", version=f"ddpm_lib {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    add_grade(parser.add_subparsers(dest="command", metavar="{grade}", parser_class=Parser))
    return parser


def cmd_grade(args) -> int:
    try:
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError:
        raise UsageError("the grader needs nbclient and nbformat: pip install \"ddpm_lib[grade]\"") from None
    from .grading import grade

    for path in args.submissions:
        if path.is_dir():
            raise UsageError(f"{path} is a folder; give the notebooks in it, e.g. {path}/*.ipynb")
        if not path.is_file():
            raise UsageError(f"submission {path} does not exist")
        if path.suffix != ".ipynb":
            raise UsageError(f"submission {path} is not a notebook (.ipynb)")
    if args.out is not None:
        if args.out.is_dir():
            raise UsageError(f"--out {args.out} is a folder; give a file name, e.g. {args.out / 'grades.csv'}")
        check_can_create(args.out.parent if str(args.out.parent) else Path("."), "folder of --out")
    grade(list(args.submissions), timeout=args.timeout, out=args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        return cmd_grade(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted (SIGINT); no grades were written", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as err:                                # a failure of the grader itself: one line
        if "--debug" in argv:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {type(err).__name__}: {message} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError) else EXIT_FAILURE
