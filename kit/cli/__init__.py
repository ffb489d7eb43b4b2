"""The `kit` command line: the application object and its entry point
(kit.cli.application), one module of commands per family, and one renderer
per family in kit.cli.views. Commands parse, call one core function, render."""

from kit.cli.application import app, main

__all__ = ["app", "main"]
