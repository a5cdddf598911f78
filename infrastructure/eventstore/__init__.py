"""The event store: the library's recorders with the audit hash chain, where the store lives,
fast log reading and watching the head of the log."""
