"""The staff console: server-rendered pages on the same use cases and read models as the API."""

from infrastructure.console.pages import ConsoleServices, add_console

__all__ = ["ConsoleServices", "add_console"]
