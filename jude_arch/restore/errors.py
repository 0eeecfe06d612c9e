"""The one error of the inference stack, raised wherever a checkpoint, setting or image cannot be used."""


class RestoreError(ValueError):
    """A checkpoint, setting or image the restorer cannot use; the message says what and what to do."""
