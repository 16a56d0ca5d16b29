"""FlatStore: a platform's model directory (SageMaker SM_MODEL_DIR, Vertex AI AIP_MODEL_DIR) holds one run,
flat: no `<run-id>/` folder and no latest.json, because the platform itself packs or serves that folder.

The run is staged in a hidden folder inside it; publishing first removes the folder's previous manifest (so it
never looks complete while it changes), replaces its entries with the run's, and moves the manifest in last.
"""

import os
import shutil
from pathlib import Path

from job.runtime.signals import deferred_signals
from job.storage.local import LocalStore
from job.storage.manifest import MANIFEST

# Where each layout puts the SavedModel inside the run folder; the other files sit beside it.
SAVEDMODEL_DIRS = {"runs": "saved_model", "sagemaker": "1", "vertex": "."}


def savedmodel_dir(layout: str) -> str:
    return SAVEDMODEL_DIRS[layout]


class FlatStore(LocalStore):
    def publish(self, run_dir: Path, run_id: str, summary: dict) -> str:
        if run_dir.parent.resolve() != self.root.resolve():  # `job publish` of a folder from elsewhere
            staged = self.staging_dir(run_id)
            shutil.copytree(run_dir, staged, dirs_exist_ok=True)
            run_dir = staged
        try:
            (self.root / MANIFEST).unlink(missing_ok=True)
            for old in self.root.iterdir():  # the folder belongs to this job: a previous attempt's files go
                if not old.name.startswith(".") and old.resolve() != run_dir.resolve():
                    shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
            with deferred_signals():
                for entry in sorted(run_dir.iterdir()):
                    if entry.name != MANIFEST:
                        os.replace(entry, self.root / entry.name)
                os.replace(run_dir / MANIFEST, self.root / MANIFEST)
        except OSError as exc:
            raise self._fail("publish the run", exc) from None
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        return str(self.root)
