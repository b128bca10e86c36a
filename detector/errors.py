"""The one base of every error a user can cause.

A missing or damaged capture, a bad policy or signature file, an output that cannot be
written, a worker that died: each is a ``UserError`` whose message is one line naming the
file or option at fault. The command line catches this one class, prints the line and exits
with status 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input, said in one line; the command line exits with status 2."""
