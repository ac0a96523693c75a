"""psylens."""
