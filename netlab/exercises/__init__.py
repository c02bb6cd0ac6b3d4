"""exercises room."""
