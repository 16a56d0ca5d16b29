"""AWS Batch's documented limits on a job definition's retry strategy, and its rule evaluation, encoded from the
API reference because neither botocore's parameter validation nor cfn-lint's resource schema holds them:

- RetryStrategy (https://docs.aws.amazon.com/batch/latest/APIReference/API_RetryStrategy.html): `attempts`
  1 to 10; `evaluateOnExit` "Array of up to 5 EvaluateOnExit objects".
- EvaluateOnExit (https://docs.aws.amazon.com/batch/latest/APIReference/API_EvaluateOnExit.html): `action` RETRY
  or EXIT, not case sensitive, required; `onExitCode` a glob of at most 512 characters, "only numbers, and can
  end with an asterisk (*)"; `onReason` / `onStatusReason` at most 512 characters of "letters, numbers,
  periods (.), colons (:), and white space", optionally ending with an asterisk; a rule applies when all of
  its conditions match; "If none of the EvaluateOnExit conditions in a RetryStrategy match, then the job is
  retried."
"""

import re

MAX_RULES = 5
ATTEMPTS = range(1, 11)
_EXIT_CODE = re.compile(r"^[0-9]*\*?$")
_REASON = re.compile(r"^[A-Za-z0-9.: \t]*\*?$")


def problems(retry_strategy: dict) -> list[str]:
    """What AWS Batch would refuse in a retryStrategy (empty: it registers)."""
    found = []
    if retry_strategy.get("attempts") not in ATTEMPTS:
        found.append(f"attempts must be 1 to 10, is {retry_strategy.get('attempts')!r}")
    rules = retry_strategy.get("evaluateOnExit", [])
    if len(rules) > MAX_RULES:
        found.append(f"evaluateOnExit holds {len(rules)} rules; AWS Batch allows up to {MAX_RULES}")
    for i, rule in enumerate(rules):
        if str(rule.get("action", "")).upper() not in ("RETRY", "EXIT"):
            found.append(f"rule {i}: action must be RETRY or EXIT")
        for key, pattern in (("onExitCode", _EXIT_CODE), ("onReason", _REASON), ("onStatusReason", _REASON)):
            value = rule.get(key)
            if value is not None and (len(value) > 512 or not pattern.match(value)):
                found.append(f"rule {i}: {key} {value!r} is not a pattern AWS Batch accepts")
        if not any(k in rule for k in ("onExitCode", "onReason", "onStatusReason")):
            found.append(f"rule {i}: no condition")
    return found


def _glob(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern


def action(retry_strategy: dict, *, exit_code: int | None = None, reason: str = "", status_reason: str = "") -> str:
    """What Batch does with a failed attempt: the first rule whose every condition matches, else RETRY."""
    for rule in retry_strategy.get("evaluateOnExit", []):
        values = {
            "onExitCode": None if exit_code is None else str(exit_code),
            "onReason": reason,
            "onStatusReason": status_reason,
        }
        if all(_glob(rule[k], values[k]) for k in values if k in rule):
            return rule["action"].upper()
    return "RETRY"
