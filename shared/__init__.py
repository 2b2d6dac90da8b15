"""Protocol types shared by the dubfleet coordinator, worker and client."""
