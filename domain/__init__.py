"""The membership rules of the UNESCO Global Network of Learning Cities: pure, replayable, no I/O."""
