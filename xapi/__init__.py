"""pyxapi: the XAPI toolstack in Python, with its hot paths compiled."""

__version__ = "0.1.0"
