"""Command-line entry points (absl flags live here, not in library modules)."""
