"""The project's one family of errors a user can fix.

`UserError` is raised for what the person running a command, the UI or the API can put right: a wrong
setting, a missing or malformed file, an unknown model or pack name, an unreadable index. Every entry
point (`python -m assistant|index|finetune|ui`, the UI's handlers, the API) shows its message as it is,
with no traceback. Any other exception is a bug: it is logged with its traceback, and a customer sees a
short apology with the audit turn id, never the exception's text.

It lives in `index`, the layer every other part imports. Subclasses keep `ValueError` (or `OSError`,
`RuntimeError`) as a second base where callers already catch that.
"""

from __future__ import annotations

import argparse
import sys


class UserError(Exception):
    """Something the user can fix; the message says what to do."""


class SettingError(UserError, ValueError):
    """A setting, option or argument with a value it cannot take."""


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, UserError)


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None = None,
            user_errors: tuple[type[BaseException], ...] = (UserError,)) -> int:
    """Parse `argv`, run the chosen command (`args.func`), and show a user error as one line with exit
    code 2. Anything else is a bug: it ends with its traceback."""
    from index.quiet import quiet_libraries

    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        return args.func(args)
    except user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
