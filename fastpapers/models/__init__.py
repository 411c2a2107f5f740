"""Paper models: thin nn.Module definitions, one file per paper (see DESIGN.md)."""
