"""The one base of every error a user can cause.

A missing or damaged capture, a bad policy or signature file, an output that cannot be
written, a worker that died: each is a ``UserError`` whose message is one line naming the
file or option at fault. The command line catches this one class, prints the line and exits
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input, said in one line; the command line exits with status 2."""


def read_input(path: str | Path, error: type[UserError]) -> bytes:
    """The bytes of an input file, or ``error`` naming the file and why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or exc}") from None


def one_line(text: str) -> str:
    """``text`` with every character that is not printable escaped (a tab a csv error
    quotes, a control byte from a file), so that a message stays one printable line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
