"""Worker exceptions: one base; the loop maps each subclass to what it tells the coordinator."""
from __future__ import annotations


class WorkerError(Exception):
    """Worker error."""

    retryable = True

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())


class JobFailed(WorkerError):
    """The job failed and another attempt may succeed."""


class PermanentJobError(JobFailed):
    """The job can never succeed as submitted (bad media, unsupported language pair)."""

    retryable = False


class BadMedia(PermanentJobError):
    """The input is not usable media."""


class UnsupportedJob(PermanentJobError):
    """No installed engine can run this job."""


class JobCancelled(WorkerError):
    """The client cancelled the job."""


class LeaseLost(WorkerError):
    """This worker no longer holds the job's lease; its output must be discarded.

    `job_status` and `this_lease` come from the coordinator's 409 reply: what became of the job,
    and whether it was this worker's own lease that ended (e.g. its final upload completed the
    job although the reply was lost) rather than someone else's.
    """

    def __init__(self, message: str | None = None, job_status: str | None = None,
                 this_lease: bool = False):
        super().__init__(message)
        self.job_status = job_status
        self.this_lease = this_lease

    def outcome(self) -> str:
        """What really happened to the job, for the worker's log and outcome list."""
        if self.this_lease and self.job_status in ("completed", "cancelled", "failed"):
            return str(self.job_status)
        return "lease_lost"


class ShutdownRequested(WorkerError):
    """The worker was told to stop at once; the job is released back to the queue."""


class CoordinatorError(WorkerError):
    """The coordinator answered with an error."""

    def __init__(self, message: str | None = None, status: int = 0, error: str = ""):
        super().__init__(message)
        self.status = status
        self.error = error


class CoordinatorUnavailable(CoordinatorError):
    """The coordinator could not be reached."""


class Backoff(CoordinatorUnavailable):
    """The coordinator asked us to slow down (429/503 with Retry-After)."""

    def __init__(self, message: str | None = None, status: int = 0, error: str = "",
                 retry_after: float | None = None):
        super().__init__(message, status, error)
        self.retry_after = retry_after
