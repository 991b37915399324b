"""Embedded, flag- and wire-compatible stand-in for ``tensorflow_model_server``."""
