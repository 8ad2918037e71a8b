"""The one error type the toolkit raises for bad input.

Its message is a single clear sentence; the CLI prints it and exits non-zero, with no
traceback and no output file.
"""


class RevivalError(Exception):
    """Bad input or an impossible request, explained in one sentence."""
