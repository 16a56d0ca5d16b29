"""What every location (job.storage.local, job.storage.s3) shares: the error for a name that is not there, and
the operations written once on top of a location's own `copy_out`."""

from pathlib import Path

from job.errors import DataError
from job.storage.files import atomic_path


class Missing(DataError):
    """The name does not exist in the location (exit 3 where the caller needed it)."""


class Location:
    root: Path | None = None  # the folder of a local location; None for a remote one
    last_upload: dict | None = None  # a remote location's figures of its last publish (files, bytes, seconds)

    def copy_out(self, name: str, dest: Path, limit: int) -> str:  # pragma: no cover - each backend has its own
        raise NotImplementedError

    def get_file(self, name: str, dest: Path, limit: int) -> bool:
        """Copy `name` to `dest` (replaced atomically); False where it does not exist."""
        try:
            with atomic_path(dest) as tmp:
                tmp.unlink()
                self.copy_out(name, tmp, limit)
        except Missing:
            return False
        return True
