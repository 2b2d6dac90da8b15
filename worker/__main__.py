"""`python -m worker`: same as the `worker` console script."""
from worker.cli import main

if __name__ == "__main__":
    main(prog_name="worker")
