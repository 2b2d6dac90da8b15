"""Media stages: each is dataclass in -> dataclass out and testable alone on a real short file."""
