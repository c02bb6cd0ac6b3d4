"""trace room."""
