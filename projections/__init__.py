"""Read models folded from the event log: pure state and answers (SQL storage: infrastructure)."""
