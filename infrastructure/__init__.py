"""Adapters: persistence, the command line, and the one composition root."""
