"""latest.json: the store's pointer to its newest complete run."""

import time

LATEST = "latest.json"


def latest_record(run_id: str, run_uri: str, summary: dict) -> dict:
    return {
        "run_id": run_id,
        "uri": run_uri,
        "manifest": f"{run_uri}/manifest.json",
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "test_accuracy": summary.get("test_accuracy"),
        "onnx_test_accuracy": summary.get("onnx_test_accuracy"),
    }
