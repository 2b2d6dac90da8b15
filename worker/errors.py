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
    """This worker no longer holds the job's lease; its output must be discarded."""


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
