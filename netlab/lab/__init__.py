"""lab room."""
