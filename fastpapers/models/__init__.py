"""Paper models built on fastpapers.ops."""
