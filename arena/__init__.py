"""MISLEADER Arena front end: CLI, TUI and match orchestration."""
