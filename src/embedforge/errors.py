"""User-facing errors: one line, no traceback at the entry points."""


class EmbedforgeError(Exception):
    """A problem with the user's input or config, reported as one line by every entry point."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
