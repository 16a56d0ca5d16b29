"""The two S3 writes that must be all or nothing: a run folder published under its name (`publish_tree`: every
object read back and hashed before the manifest marks it complete) and the store's pointer replaced by
compare-and-swap (`swap`: If-Match on its ETag). `location` is a job.storage.s3.S3Location."""

import logging
import time
from collections.abc import Callable
from pathlib import Path

from job.errors import StorageError
from job.gates.text import shown
from job.runtime.signals import deferred_signals
from job.storage.local import MAX_READ
from job.storage.s3body import Buffer, CutShort, md5_b64, stream_body

log = logging.getLogger(__name__)


def publish_tree(location, staged: Path, name: str, commit: Callable[[], None], last: str) -> str:
    """Upload every file of `staged` under `name/`, the file `last` (the manifest) after all others, then
    `commit()`; an earlier folder of that name is first un-completed (its `last` removed) and removed.
    Every object is read back and hashed before `last` is written, and `last` itself before `commit()`.
    On any failure the objects written are removed (`last` first) and nothing else changed."""
    run_prefix, written = location.key(name), []
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    started, requests0 = time.perf_counter(), location.requests
    try:
        previous = [o["Key"] for page in location.pages(run_prefix + "/") for o in page.get("Contents", [])]
        if previous:
            log.info("replacing the %d objects of an earlier run %s", len(previous), location.describe(name))
            location.delete_keys([k for k in previous if k.endswith("/" + last)])
            location.delete_keys(previous)
        sent = {}
        for rel in [f for f in files if f != last]:
            written.append(f"{run_prefix}/{rel}")
            sent[rel] = location.put_file(f"{name}/{rel}", staged / rel)
        t0 = time.perf_counter()
        for rel, digest in sent.items():  # read back before the run can look complete
            location.check_arrived(f"{name}/{rel}", digest, (staged / rel).stat().st_size)
        checked = time.perf_counter() - t0
        with deferred_signals():  # the commit: `last` marks the folder complete, then commit() (the pointer)
            written.append(f"{run_prefix}/{last}")
            digest = location.put_file(f"{name}/{last}", staged / last)
            t0 = time.perf_counter()
            location.check_arrived(f"{name}/{last}", digest, (staged / last).stat().st_size)
            checked += time.perf_counter() - t0
            commit()
    except BaseException:
        # `last` first, so that a partially removed run never looks complete
        location.delete_keys(sorted(written, key=lambda k: not k.endswith("/" + last)), quiet=True)
        raise
    seconds = time.perf_counter() - started
    total = sum((staged / rel).stat().st_size for rel in files)
    location.last_upload = {
        "bytes": total,
        "objects": len(files),
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / 1e6 / max(seconds, 1e-9), 2),
        "requests": location.requests - requests0,
        "verify_seconds": round(checked, 3),
    }
    log.info("published %d objects (%.1f MB) to %s in %.2fs", len(files), total / 1e6, location.describe(name), seconds)
    return location.describe(name)


def swap(location, name: str, decide: Callable[[bytes | None], bytes | None], attempts: int = 8) -> None:
    """Compare-and-swap `name`: read it with its ETag, `decide(current)` the new content (None: keep), write
    it with If-Match (If-None-Match: * where there is none). A 409/412 means another writer moved it in
    between: read again. Stores without conditional writes (501) get a plain write, logged."""
    from botocore.exceptions import ClientError

    cut = None
    for _ in range(attempts):
        obj = location.get_object(name, MAX_READ)
        etag = obj["ETag"] if obj else None
        current = None
        if obj:
            with location.storage_errors(f"read {location.key(name)} from"), Buffer() as sink:
                try:
                    stream_body(obj, sink, MAX_READ, location.describe(name))
                except CutShort as exc:  # never taken for a damaged pointer (which would be replaced)
                    cut = exc
                    log.warning("%s: body cut short (%s); reading it again", location.describe(name), cut)
                    continue
                current, cut = sink.getvalue(), None
        new = decide(current)
        if new is None:
            return
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            location.client.put_object(
                Bucket=location.bucket,
                Key=location.key(name),
                Body=new,
                ContentMD5=md5_b64(new),
                ContentType="application/json",
                **condition,
            )
            return
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if exc.response.get("Error", {}).get("Code") == "NotImplemented" or status == 501:
                log.warning("this S3 store has no conditional writes; %s written unconditionally", name)
                location.write(name, new)
                return
            if status not in (409, 412):
                raise location.fail(exc, f"write {location.key(name)} to") from None
    if cut is not None:
        raise StorageError(
            f"{location.what}: {shown(location.describe(name))}: the body was cut short on {attempts} attempts to "
            f"read it (last: {cut}); check the network or proxy to {location.client.meta.endpoint_url}"
        )
    raise StorageError(
        f"{location.describe(name)} kept changing under {attempts} attempts to update it; publish again to move it"
    )
