"""InvalidInput, the error services raise on rejected input; it imports nothing, so every app can use it."""


class InvalidInput(ValueError):
    """Input that is rejected as a whole; the message says what and where."""
