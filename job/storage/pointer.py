"""latest.json: the store's pointer to its newest complete run, by training finish time.

Publishing an older run again (say, from the unpublished cache) does not move the pointer back, and neither
do two jobs publishing at once: the pointer is compared and replaced atomically (a lock file on a local
store; a conditional write, If-Match on the pointer's ETag, on S3).
"""

import time

from job.storage.layout import MANIFEST


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def latest_record(run_id: str, run_uri: str, summary: dict) -> dict:
    return {
        "run_id": run_id,
        "uri": run_uri,
        "manifest": f"{run_uri}/{MANIFEST}",
        "finished_at": summary.get("finished_at") or utc_now(),
        "published_at": utc_now(),
        "test_accuracy": summary.get("test_accuracy"),
        "onnx_test_accuracy": summary.get("onnx_test_accuracy"),
    }


def should_replace(current: dict | None, candidate: dict) -> bool:
    """The candidate becomes latest unless the current pointer names a run that finished later."""
    if not isinstance(current, dict) or current.get("run_id") == candidate["run_id"]:
        return True
    return str(candidate.get("finished_at") or "") >= str(current.get("finished_at") or "")
