"""proxy room."""
