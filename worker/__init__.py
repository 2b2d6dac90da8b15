"""dubfleet worker: pulls jobs from a coordinator and runs them (echo, transcribe, subtitle, dub)."""
