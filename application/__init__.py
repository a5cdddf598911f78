"""The use cases of the registry: load, decide, save."""
