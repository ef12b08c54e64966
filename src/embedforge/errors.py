"""User-facing errors: one line, no traceback at the entry points."""


def printable(text: str) -> str:
    """``text`` with control characters (newlines, ANSI escapes) and the undecodable bytes of a
    file name escaped (``\\n``, ``\\x1b``, ``\\xe9``): what a name looks like when printed or
    logged, so that it can neither forge a line nor recolour the terminal."""
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in str(text))


def _escape(c: str) -> str:
    if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{ord(c) - 0xDC00:02x}"
    return c.encode("unicode_escape").decode("ascii")


class EmbedforgeError(Exception):
    """A problem with the user's input or config, reported as one line by every entry point
    (whitespace runs collapsed, control characters escaped: see :func:`printable`)."""

    def __init__(self, message: str):
        super().__init__(printable(" ".join(str(message).split())))
