"""dubfleet client: submit videos to a dubfleet coordinator, follow them and fetch results."""
