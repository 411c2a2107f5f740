"""Paper models, one module per paper (see DESIGN.md)."""
