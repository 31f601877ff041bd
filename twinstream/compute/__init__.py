"""twinstream.compute: (not built yet; see ARCHITECTURE.md for its role)."""
