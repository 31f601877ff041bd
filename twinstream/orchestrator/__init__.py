"""twinstream.orchestrator: (not built yet; see ARCHITECTURE.md for its role)."""
