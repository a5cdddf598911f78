"""The membership rules of the Global Network of Learning Cities: pure, replayable, no I/O."""
