"""What a cluster does with the pods of infra/'s manifests, encoded from the Kubernetes and JobSet documentation and
source, for the tests to evaluate rule by rule (as tests/aws_batch.py does for AWS Batch):

- Pod Security Standards, "restricted" profile (kubernetes.io/docs/concepts/security/pod-security-standards/): every
  baseline control plus the restricted ones, checked on a PodSpec as the PodSecurity admission plugin checks it;
- the Job controller's pod failure policy (kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy;
  pkg/controller/job/pod_failure_policy.go): the first rule that matches a failed pod decides (FailJob, Ignore,
  Count); no match counts against backoffLimit; FailJob ends the Job with reason PodFailurePolicy and the message
  "Container <c> for pod <ns>/<pod> failed with exit code <n> matching FailJob rule at index <i>" or
  "Pod <ns>/<pod> has condition <type> matching FailJob rule at index <i>"; more failures than backoffLimit end it
  with reason BackoffLimitExceeded;
- JobSet's failure policy (jobset.sigs.k8s.io/docs/concepts, api FailurePolicyRule): the first rule whose
  targetReplicatedJobs, onJobFailureReasons and onJobFailureMessagePatterns (regexes, any may match) all match a
  failed Job decides; no match restarts the JobSet, counted against maxRestarts; no failurePolicy fails the JobSet.
"""

import re
from collections.abc import Iterator

# ------------------------------------------------------------------ Pod Security Standards: restricted

BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def restricted_problems(pod: dict) -> list[str]:
    """What the PodSecurity admission plugin at level "restricted" would reject in this PodSpec (empty: admitted)."""
    found = []
    psc = pod.get("securityContext") or {}
    containers = _containers(pod)
    # baseline
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"{key} is set")
    contexts = [("pod", psc)] + [(c["name"], c.get("securityContext") or {}) for c in containers]
    for who, sc in contexts:
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{who}: windowsOptions.hostProcess")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            found.append(f"{who}: seLinuxOptions")
        if (sc.get("appArmorProfile") or {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{who}: appArmorProfile")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"{who}: seccompProfile Unconfined")
        if sc.get("runAsNonRoot") is False:
            found.append(f"{who}: runAsNonRoot false")
        if sc.get("runAsUser") == 0:
            found.append(f"{who}: runAsUser 0")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"pod: sysctl {sysctl['name']}")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            found.append(f"volume {volume['name']}: hostPath")
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: type {sorted(kinds - RESTRICTED_VOLUMES)} not allowed")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    for c in containers:
        sc, name = c.get("securityContext") or {}, c["name"]
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{name}: hostPort")
        caps = sc.get("capabilities") or {}
        if not set(caps.get("add", [])) <= BASELINE_CAPABILITIES:
            found.append(f"{name}: adds capabilities beyond baseline")
        # restricted
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation must be false")
        if not (pod_non_root or sc.get("runAsNonRoot") is True):
            found.append(f"{name}: runAsNonRoot must be true (pod or container)")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if not (seccomp in ("RuntimeDefault", "Localhost") or (pod_seccomp and seccomp is None)):
            found.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
        if "ALL" not in caps.get("drop", []):
            found.append(f"{name}: capabilities must drop ALL")
        if not set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}:
            found.append(f"{name}: may add only NET_BIND_SERVICE")
    return found


def pod_specs(node, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every PodSpec in a manifest (any dict with `containers`), wherever its kind nests it."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield path, node
            return
        for key, value in node.items():
            yield from pod_specs(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from pod_specs(value, f"{path}[{i}]")


# ------------------------------------------------------------------ the Job controller


def _exit_rule_matches(rule: dict, container: str, exit_code: int) -> bool:
    if exit_code == 0:  # the controller never matches a successful container
        return False
    if rule.get("containerName") and rule["containerName"] != container:
        return False
    inside = exit_code in rule["values"]
    return inside if rule["operator"] == "In" else not inside


def pod_failure(job_spec: dict, *, container: str, exit_code: int, conditions=(), pod="ns/pod") -> tuple[str, str]:
    """(action, message) of the Job controller for a failed pod: FailJob, Ignore or Count."""
    for index, rule in enumerate((job_spec.get("podFailurePolicy") or {}).get("rules", [])):
        if "onExitCodes" in rule:
            if _exit_rule_matches(rule["onExitCodes"], container, exit_code):
                message = (
                    f"Container {container} for pod {pod} failed with exit code {exit_code} "
                    f"matching {rule['action']} rule at index {index}"
                )
                return rule["action"], message
        else:
            for wanted in rule.get("onPodConditions", []):
                if any(c == wanted["type"] and wanted.get("status", "True") == "True" for c in conditions):
                    return rule[
                        "action"
                    ], f"Pod {pod} has condition {wanted['type']} matching {rule['action']} rule at index {index}"
    return "Count", ""


def job_failure(job_spec: dict, **pod) -> tuple[str, str] | None:
    """What one failed pod does to its Job: None while the Job goes on (the pod is recreated), else the Job's
    failure (reason, message)."""
    action, message = pod_failure(job_spec, **pod)
    if action == "FailJob":
        return "PodFailurePolicy", message
    if action == "Count" and job_spec.get("backoffLimit", 6) < 1:
        return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    return None


def job_outcome(job_spec: dict, **pod) -> str:
    """For a plain Job: 'fail' (at once), 'retry-free' (recreated, not counted) or 'retry-counted'."""
    action, _ = pod_failure(job_spec, **pod)
    return {"FailJob": "fail", "Ignore": "retry-free"}.get(action) or (
        "retry-counted" if job_spec.get("backoffLimit", 6) >= 1 else "fail"
    )


# ------------------------------------------------------------------ JobSet


def jobset_action(failure_policy: dict | None, replicated_job: str, reason: str, message: str) -> str:
    if failure_policy is None:
        return "FailJobSet"
    for rule in failure_policy.get("rules", []):
        if rule.get("targetReplicatedJobs") and replicated_job not in rule["targetReplicatedJobs"]:
            continue
        if rule.get("onJobFailureReasons") and reason not in rule["onJobFailureReasons"]:
            continue
        patterns = rule.get("onJobFailureMessagePatterns") or []
        if patterns and not any(re.search(p, message) for p in patterns):
            continue
        return rule["action"]
    return "RestartJobSet"


def jobset_outcome(jobset_spec: dict, replicated_job: dict, **pod) -> str:
    """'fail', 'retry-free' (the pod, the Job or the JobSet restarts without using up a restart) or 'retry-counted'."""
    failed = job_failure(replicated_job["template"]["spec"], **pod)
    if failed is None:
        return (
            "retry-free" if pod_failure(replicated_job["template"]["spec"], **pod)[0] == "Ignore" else "retry-counted"
        )
    policy = jobset_spec.get("failurePolicy")
    action = jobset_action(policy, replicated_job["name"], *failed)
    if action.endswith("AndIgnoreMaxRestarts"):
        return "retry-free"
    if action in ("RestartJobSet", "RestartJob"):
        return "retry-counted" if (policy or {}).get("maxRestarts", 0) > 0 else "fail"
    return "fail"


def deadline_outcome(jobset_spec: dict, replicated_job: dict) -> str:
    """A Job past its activeDeadlineSeconds fails with reason DeadlineExceeded."""
    action = jobset_action(jobset_spec.get("failurePolicy"), replicated_job["name"], "DeadlineExceeded", "")
    return "fail" if action == "FailJobSet" else "retry"
