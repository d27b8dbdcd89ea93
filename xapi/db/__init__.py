"""The pool database: tables made from the datamodel over the generation-counted store (xapi.fastdb)."""
