"""A signal around a commit tells the truth. Once a publish committed, the run IS published: a SIGTERM that arrives
after is logged and the command ends as it would have (exit 0), so a platform that retries on 143 never runs again
what is done (before: 36 of 40 such signals ended in 143 with "nothing was published" while latest.json pointed at
the run; 4 killed the process, -15). And a signal handled the moment the handlers are installed ends in 143, never
in a traceback (before: exit 1 through `from job.runtime import platform`)."""

import signal
import subprocess
import sys

from helpers import ROOT, job_env, make_run_dir


def test_a_sigterm_after_the_publish_committed_never_says_nothing_was_published(tmp_path):
    run = make_run_dir(tmp_path, "run", run_id="r1")
    for i in range(10):
        store = tmp_path / f"store{i}"
        p = subprocess.Popen(
            [sys.executable, "-m", "job", "publish", str(run), str(store)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=job_env(),
            cwd=ROOT,
        )
        for line in p.stdout:
            if "run_published" in line:
                p.send_signal(signal.SIGTERM)
                break
        _, err = p.communicate(timeout=120)
        if (store / "latest.json").exists():
            assert p.returncode == 0 and "nothing was published" not in err, (p.returncode, err[-300:])
        else:
            assert p.returncode == 143, (p.returncode, err[-300:])


def test_a_sigterm_right_after_the_handlers_are_installed_ends_in_143_not_a_traceback(tmp_path):
    code = (
        "import os, signal, sys, job.runtime.signals as s\n"
        "orig = s.install_handlers\n"
        "def install():\n"
        "    orig(); os.kill(os.getpid(), signal.SIGTERM)\n"  # the real signal, at the first moment it is handled
        "s.install_handlers = install\n"
        "from job.cli import main\n"
        f"sys.exit(main(['runs', 'list', {str(tmp_path)!r}]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=job_env(), cwd=ROOT, timeout=120
    )
    assert r.returncode == 143 and "Traceback" not in r.stderr, r.stderr[-600:]
    assert "terminated: SIGTERM; nothing was published" in r.stderr, r.stderr[-600:]
