"""The mark of an error in what the user gave, which a command reports as one line."""

from __future__ import annotations


class UserError(Exception):
    """An error in the user's input (a file, a config key, a value), raised with a one-line
    message that names it and says what to do: ``train_net`` prints that line and exits with
    status 2, without a traceback (``--debug`` or ``DETKIT_DEBUG=1`` shows it).

    A concrete error also subclasses the built-in type callers catch, e.g.
    ``class CheckpointFileError(UserError, ValueError)``.
    """
