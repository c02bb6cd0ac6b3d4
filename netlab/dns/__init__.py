"""dns room."""
