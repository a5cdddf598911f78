"""The audit of the log: verify the hash chain, export it, past states."""
