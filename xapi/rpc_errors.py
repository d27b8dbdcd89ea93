"""The error both wire codecs raise, so ``except CodecError`` works whichever one is loaded."""


class CodecError(ValueError):
    """A request or reply could not be decoded, or a value could not be encoded.

    ``id`` is the JSON-RPC request id when it could be read before the error was
    found (so the server can still echo it in its error reply), else None.
    """

    def __init__(self, message: str = "", id=None):
        super().__init__(message)
        self.id = id
