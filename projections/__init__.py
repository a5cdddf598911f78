"""Read models built from the event log (issue 3)."""
