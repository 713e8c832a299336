"""Training networks here: deterministic loops on the project's own data."""
