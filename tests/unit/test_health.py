"""Unit tests for daemon.health.checks: per-kind health against YAML fixtures, and aggregation."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from daemon.health.checks import aggregate, assess, has_check
from daemon.model import Health, HealthStatus, ResourceKey

HEALTHY = HealthStatus.HEALTHY
SUSPENDED = HealthStatus.SUSPENDED
PROGRESSING = HealthStatus.PROGRESSING
MISSING = HealthStatus.MISSING
DEGRADED = HealthStatus.DEGRADED
UNKNOWN = HealthStatus.UNKNOWN


def load(text: str) -> dict[str, Any]:
    """Parse one inline YAML fixture."""
    body = yaml.safe_load(textwrap.dedent(text))
    assert isinstance(body, dict)
    return body


def health_of(text: str) -> Health:
    """Assess an inline YAML fixture that must have a health check."""
    health = assess(load(text))
    assert health is not None
    return health


# --- GetResourceHealth preamble --------------------------------------------------------------


def test_deleting_object_is_pending_deletion() -> None:
    """An object with a deletionTimestamp is Progressing 'Pending deletion' whatever its status."""
    health = health_of(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, generation: 1, deletionTimestamp: "2024-05-01T10:00:00Z"}
        spec: {replicas: 1}
        status: {observedGeneration: 1, replicas: 1, updatedReplicas: 1, availableReplicas: 1}
        """
    )
    assert health == Health(PROGRESSING, "Pending deletion")


def test_deleting_kind_without_check_is_pending_deletion() -> None:
    """Pending deletion applies before dispatch, so even a ConfigMap being deleted reports it."""
    health = assess(
        load(
            """
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: cfg, deletionTimestamp: 2024-05-01T10:00:00Z}
            """
        )
    )
    assert health == Health(PROGRESSING, "Pending deletion")


def test_hook_finalizer_keeps_real_health_while_deleting() -> None:
    """A hook held by Argo CD's hook finalizer reports its own health, not Pending deletion."""
    health = health_of(
        """
        apiVersion: batch/v1
        kind: Job
        metadata:
          name: migrate
          deletionTimestamp: "2024-05-01T10:00:00Z"
          finalizers: [argocd.argoproj.io/hook-finalizer]
        status:
          conditions: [{type: Complete, status: "True", message: done}]
        """
    )
    assert health == Health(HEALTHY, "done")


def test_kind_without_check_has_no_health() -> None:
    """Kinds with no built-in check (ConfigMap, custom resources) return None."""
    assert assess(load("{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}")) is None
    assert assess(load("{apiVersion: example.com/v1, kind: Widget, metadata: {name: w}}")) is None
    assert not has_check("", "ConfigMap")
    assert has_check("apps", "Deployment")


def test_same_kind_in_other_group_has_no_health() -> None:
    """Dispatch is by group as well as kind: a custom 'Deployment' is not apps/Deployment."""
    assert assess(load("{apiVersion: example.com/v1, kind: Deployment, metadata: {}}")) is None


def test_wrong_field_type_is_unknown_naming_the_field() -> None:
    """A status field of the wrong type gives Unknown with the field's path, not an exception."""
    health = health_of(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec: {replicas: 3}
        status: {updatedReplicas: "three"}
        """
    )
    assert health.status is UNKNOWN
    assert "status.updatedReplicas is str, expected an integer" in health.message
    assert health.message.startswith("Deployment health check failed")


def test_malformed_list_element_is_unknown() -> None:
    """A condition that is not an object gives Unknown naming its index."""
    health = health_of(
        """
        apiVersion: batch/v1
        kind: Job
        metadata: {name: j}
        status: {conditions: [oops]}
        """
    )
    assert health.status is UNKNOWN
    assert "status.conditions[0] is str, expected an object" in health.message


def test_malformed_metadata_is_unknown() -> None:
    """Metadata that is not a mapping is Unknown before any kind check runs."""
    health = health_of("{apiVersion: v1, kind: Pod, metadata: [a, b]}")
    assert health.status is UNKNOWN
    assert "metadata is list" in health.message


def test_non_mapping_object_is_unknown() -> None:
    """A body that is not a mapping at all is Unknown rather than a crash."""
    bogus: Any = ["not", "an", "object"]
    health = assess(bogus)
    assert health is not None
    assert health.status is UNKNOWN
    assert "list" in health.message


def test_boolean_is_not_an_integer() -> None:
    """`replicas: true` is rejected instead of being read as 1."""
    health = health_of(
        """
        apiVersion: apps/v1
        kind: ReplicaSet
        metadata: {name: rs}
        spec: {replicas: true}
        status: {}
        """
    )
    assert health.status is UNKNOWN
    assert "spec.replicas is bool" in health.message


# --- Deployment ------------------------------------------------------------------------------

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, generation: 2}
spec: {replicas: 3}
status:
  observedGeneration: 2
  replicas: 3
  updatedReplicas: 3
  readyReplicas: 3
  availableReplicas: 3
  conditions:
  - {type: Available, status: "True", reason: MinimumReplicasAvailable}
  - {type: Progressing, status: "True", reason: NewReplicaSetAvailable}
"""


def deployment(**status: Any) -> dict[str, Any]:
    """The healthy Deployment fixture with some status fields replaced."""
    body = load(DEPLOYMENT)
    body["status"].update(status)
    return body


def test_deployment_rolled_out_is_healthy() -> None:
    """A Deployment whose replicas are all updated and available is Healthy."""
    assert assess(load(DEPLOYMENT)) == Health(HEALTHY, "")


def test_deployment_paused_is_suspended() -> None:
    """spec.paused makes a Deployment Suspended."""
    body = deployment(updatedReplicas=0)
    body["spec"]["paused"] = True
    assert assess(body) == Health(SUSPENDED, "Deployment is paused")


def test_deployment_unobserved_generation_is_progressing() -> None:
    """A spec change the controller has not observed yet is Progressing."""
    health = assess(deployment(observedGeneration=1))
    assert health is not None
    assert health.status is PROGRESSING
    assert "observed deployment generation less than desired generation" in health.message


def test_deployment_progress_deadline_exceeded_is_degraded() -> None:
    """Progressing condition with reason ProgressDeadlineExceeded is Degraded, naming the object."""
    body = deployment(
        updatedReplicas=1,
        availableReplicas=2,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    assert assess(body) == Health(DEGRADED, 'Deployment "web" exceeded its progress deadline')


def test_deployment_waiting_for_updated_replicas() -> None:
    """Fewer updated replicas than desired is Progressing with kubectl's message."""
    assert assess(deployment(updatedReplicas=1)) == Health(
        PROGRESSING, "Waiting for rollout to finish: 1 out of 3 new replicas have been updated..."
    )


def test_deployment_waiting_for_old_replicas_to_terminate() -> None:
    """More total replicas than updated ones means old pods are still terminating."""
    assert assess(deployment(replicas=5)) == Health(
        PROGRESSING, "Waiting for rollout to finish: 2 old replicas are pending termination..."
    )


def test_deployment_waiting_for_available_replicas() -> None:
    """Updated but not yet available replicas are Progressing."""
    assert assess(deployment(availableReplicas=1)) == Health(
        PROGRESSING, "Waiting for rollout to finish: 1 of 3 updated replicas are available..."
    )


def test_extensions_deployment_is_checked() -> None:
    """The legacy extensions group dispatches to the same Deployment check."""
    body = deployment(updatedReplicas=0)
    body["apiVersion"] = "extensions/v1beta1"
    health = assess(body)
    assert health is not None
    assert health.status is PROGRESSING


# --- StatefulSet -----------------------------------------------------------------------------

STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, generation: 1}
spec:
  replicas: 3
  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 0}}
status:
  observedGeneration: 1
  replicas: 3
  readyReplicas: 3
  currentReplicas: 3
  updatedReplicas: 3
  currentRevision: db-1
  updateRevision: db-1
"""


def statefulset(strategy: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    """The healthy StatefulSet fixture with the strategy and some status fields replaced."""
    body = load(STATEFULSET)
    if strategy is not None:
        body["spec"]["updateStrategy"] = strategy
    body["status"].update(status)
    return body


def test_statefulset_ready_is_healthy() -> None:
    """A StatefulSet with all pods ready and updated past the partition is Healthy."""
    health = assess(statefulset())
    assert health is not None
    assert health.status is HEALTHY
    assert "3 new pods have been updated" in health.message


def test_statefulset_never_observed_is_progressing() -> None:
    """observedGeneration 0 means the controller has not looked at it yet, whatever generation."""
    body = statefulset(observedGeneration=0)
    del body["metadata"]["generation"]
    assert assess(body) == Health(
        PROGRESSING, "Waiting for statefulset spec update to be observed..."
    )


def test_statefulset_waiting_for_ready_pods() -> None:
    """Fewer ready replicas than desired is Progressing with the shortfall."""
    assert assess(statefulset(readyReplicas=1)) == Health(
        PROGRESSING, "Waiting for 2 pods to be ready..."
    )


def test_statefulset_partitioned_rollout_in_progress() -> None:
    """With partition 1 of 3 replicas, fewer than 2 updated pods is Progressing."""
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
    health = assess(statefulset(strategy, updatedReplicas=1))
    assert health is not None
    assert health.status is PROGRESSING
    assert "1 out of 2 new pods have been updated" in health.message


def test_statefulset_partitioned_rollout_done_despite_old_revision() -> None:
    """Pods below the partition stay on the old revision; that is Healthy, not Progressing."""
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
    health = assess(statefulset(strategy, updatedReplicas=2, updateRevision="db-2"))
    assert health is not None
    assert health.status is HEALTHY


def test_statefulset_on_delete_is_healthy_once_ready() -> None:
    """OnDelete StatefulSets are Healthy once ready, whatever their revisions."""
    health = assess(statefulset({"type": "OnDelete"}, updateRevision="db-2"))
    assert health == Health(HEALTHY, "StatefulSet has 3 ready pods")


def test_statefulset_revision_mismatch_is_progressing() -> None:
    """Without rollingUpdate details, differing current/update revisions are Progressing."""
    health = assess(
        statefulset({"type": "RollingUpdate"}, updatedReplicas=1, updateRevision="db-2")
    )
    assert health is not None
    assert health.status is PROGRESSING
    assert "1 pods at revision db-2" in health.message


def test_statefulset_rolling_update_complete() -> None:
    """Without rollingUpdate details, equal revisions are Healthy."""
    health = assess(statefulset({"type": "RollingUpdate"}))
    assert health is not None
    assert health.status is HEALTHY
    assert "3 pods at revision db-1" in health.message


# --- DaemonSet -------------------------------------------------------------------------------

DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, generation: 4}
spec: {updateStrategy: {type: RollingUpdate}}
status:
  observedGeneration: 4
  desiredNumberScheduled: 3
  updatedNumberScheduled: 3
  numberAvailable: 3
"""


def daemonset(**status: Any) -> dict[str, Any]:
    """The healthy DaemonSet fixture with some status fields replaced."""
    body = load(DAEMONSET)
    body["status"].update(status)
    return body


def test_daemonset_rolled_out_is_healthy() -> None:
    """A DaemonSet with every scheduled pod updated and available is Healthy."""
    assert assess(daemonset()) == Health(HEALTHY, "")


def test_daemonset_unobserved_generation_is_progressing() -> None:
    """A DaemonSet spec change not yet observed is Progressing."""
    health = assess(daemonset(observedGeneration=3))
    assert health is not None
    assert health.status is PROGRESSING


def test_daemonset_waiting_for_updates() -> None:
    """Fewer updated pods than desired is Progressing with the counts."""
    assert assess(daemonset(updatedNumberScheduled=1)) == Health(
        PROGRESSING,
        'Waiting for daemon set "agent" rollout to finish: 1 out of 3 new pods have been '
        "updated...",
    )


def test_daemonset_waiting_for_available() -> None:
    """Updated but unavailable pods are Progressing."""
    health = assess(daemonset(numberAvailable=2))
    assert health is not None
    assert health.status is PROGRESSING
    assert "2 of 3 updated pods are available" in health.message


def test_daemonset_on_delete_is_healthy_with_partial_update() -> None:
    """OnDelete DaemonSets are Healthy even while some pods run the old template."""
    body = daemonset(updatedNumberScheduled=1)
    body["spec"]["updateStrategy"] = {"type": "OnDelete"}
    assert assess(body) == Health(HEALTHY, "DaemonSet 1 out of 3 new pods have been updated")


# --- ReplicaSet ------------------------------------------------------------------------------

REPLICASET = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-abc, generation: 1}
spec: {replicas: 2}
status: {observedGeneration: 1, replicas: 2, availableReplicas: 2}
"""


def test_replicaset_available_is_healthy() -> None:
    """A ReplicaSet with all replicas available is Healthy."""
    assert assess(load(REPLICASET)) == Health(HEALTHY, "")


def test_replicaset_replica_failure_is_degraded() -> None:
    """ReplicaFailure=True is Degraded with the condition's message."""
    body = load(REPLICASET)
    body["status"]["availableReplicas"] = 0
    body["status"]["conditions"] = [
        {"type": "ReplicaFailure", "status": "True", "message": 'pods "web" is forbidden'}
    ]
    assert assess(body) == Health(DEGRADED, 'pods "web" is forbidden')


def test_replicaset_waiting_for_available() -> None:
    """Fewer available replicas than desired is Progressing."""
    body = load(REPLICASET)
    body["status"]["availableReplicas"] = 1
    assert assess(body) == Health(
        PROGRESSING, "Waiting for rollout to finish: 1 out of 2 new replicas are available..."
    )


def test_replicaset_unobserved_generation_is_progressing() -> None:
    """A ReplicaSet spec change not yet observed is Progressing."""
    body = load(REPLICASET)
    body["metadata"]["generation"] = 2
    health = assess(body)
    assert health is not None
    assert health.status is PROGRESSING


# --- Pod -------------------------------------------------------------------------------------


def test_pod_crash_loop_back_off_is_degraded() -> None:
    """A restartPolicy Always pod with a container in CrashLoopBackOff is Degraded."""
    health = health_of(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web-1}
        spec: {restartPolicy: Always}
        status:
          phase: Running
          conditions: [{type: Ready, status: "False"}]
          containerStatuses:
          - name: app
            ready: false
            restartCount: 4
            state:
              waiting:
                reason: CrashLoopBackOff
                message: back-off 1m20s restarting failed container=app pod=web-1
            lastState: {terminated: {exitCode: 1, reason: Error}}
        """
    )
    assert health.status is DEGRADED
    assert health.message.startswith("CrashLoopBackOff: back-off 1m20s")


@pytest.mark.parametrize(
    "reason", ["ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"]
)
def test_pod_bad_waiting_reasons_are_degraded(reason: str) -> None:
    """Waiting reasons starting with Err or ending in Error/BackOff are Degraded."""
    body = load(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec: {restartPolicy: Always}
        status:
          phase: Pending
          containerStatuses: [{name: app, state: {waiting: {}}}]
        """
    )
    body["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] = reason
    assert assess(body) == Health(DEGRADED, f'container "app" is waiting: {reason}')


def test_pod_container_creating_is_progressing() -> None:
    """A benign waiting reason such as ContainerCreating leaves a pending pod Progressing."""
    health = health_of(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec: {restartPolicy: Always}
        status:
          phase: Pending
          containerStatuses: [{name: app, state: {waiting: {reason: ContainerCreating}}}]
        """
    )
    assert health == Health(PROGRESSING, "Pod is pending")


def test_hook_pod_image_pull_back_off_is_not_degraded() -> None:
    """With restartPolicy Never the waiting-reason rule is skipped: a hook is not failed early."""
    health = health_of(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: hook, annotations: {argocd.argoproj.io/hook: PreSync}}
        spec: {restartPolicy: Never}
        status:
          phase: Pending
          containerStatuses: [{name: app, state: {waiting: {reason: ImagePullBackOff}}}]
        """
    )
    assert health.status is PROGRESSING


POD_RUNNING = """
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {restartPolicy: Always}
status:
  phase: Running
  conditions: [{type: Ready, status: "True"}]
  containerStatuses: [{name: app, ready: true, state: {running: {}}}]
"""


def test_pod_running_ready_is_healthy() -> None:
    """A running, ready pod with restartPolicy Always is Healthy."""
    assert assess(load(POD_RUNNING)) == Health(HEALTHY, "")


def test_pod_without_restart_policy_defaults_to_always() -> None:
    """A body without restartPolicy is treated as the API default, Always."""
    body = load(POD_RUNNING)
    del body["spec"]["restartPolicy"]
    assert assess(body) == Health(HEALTHY, "")


def test_pod_running_not_ready_after_restart_is_degraded() -> None:
    """Not ready with a container whose lastState is terminated means it is crashing: Degraded."""
    body = load(POD_RUNNING)
    body["status"]["conditions"][0]["status"] = "False"
    body["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {"exitCode": 137, "reason": "OOMKilled"}
    }
    health = assess(body)
    assert health is not None
    assert health.status is DEGRADED
    assert "OOMKilled, exit code 137" in health.message


def test_pod_running_not_ready_first_start_is_progressing() -> None:
    """Not ready without any previous termination is still starting: Progressing."""
    body = load(POD_RUNNING)
    body["status"]["conditions"][0]["status"] = "False"
    assert assess(body) == Health(PROGRESSING, "Waiting for containers to become ready")


@pytest.mark.parametrize("policy", ["OnFailure", "Never"])
def test_finite_pod_running_is_progressing(policy: str) -> None:
    """A running pod with restartPolicy OnFailure/Never is Progressing even when ready."""
    body = load(POD_RUNNING)
    body["spec"]["restartPolicy"] = policy
    health = assess(body)
    assert health is not None
    assert health.status is PROGRESSING


def test_ignore_restart_policy_annotation_treats_pod_as_long_running() -> None:
    """A non-hook Never pod annotated ignore-restart-policy is Healthy when running and ready."""
    body = load(POD_RUNNING)
    body["spec"]["restartPolicy"] = "Never"
    body["metadata"]["annotations"] = {"argocd.argoproj.io/ignore-restart-policy": "true"}
    assert assess(body) == Health(HEALTHY, "")


def test_ignore_restart_policy_annotation_does_not_apply_to_hooks() -> None:
    """On a hook pod the ignore-restart-policy annotation has no effect: still Progressing."""
    body = load(POD_RUNNING)
    body["spec"]["restartPolicy"] = "Never"
    body["metadata"]["annotations"] = {
        "argocd.argoproj.io/ignore-restart-policy": "true",
        "helm.sh/hook": "post-install",
    }
    health = assess(body)
    assert health is not None
    assert health.status is PROGRESSING


def test_pod_succeeded_is_healthy() -> None:
    """A Succeeded pod (a finished hook) is Healthy."""
    health = health_of(
        "{apiVersion: v1, kind: Pod, spec: {restartPolicy: Never}, status: {phase: Succeeded}}"
    )
    assert health.status is HEALTHY


def test_pod_failed_uses_pod_message() -> None:
    """A Failed pod is Degraded with the pod's own status message when it has one."""
    health = health_of(
        """
        apiVersion: v1
        kind: Pod
        spec: {restartPolicy: Never}
        status: {phase: Failed, message: "Pod was evicted: low on memory"}
        """
    )
    assert health == Health(DEGRADED, "Pod was evicted: low on memory")


def test_pod_failed_reports_container_exit_code() -> None:
    """Without a pod message, a Failed pod names the first container that exited non-zero."""
    health = health_of(
        """
        apiVersion: v1
        kind: Pod
        spec: {restartPolicy: Never}
        status:
          phase: Failed
          initContainerStatuses: [{name: init, state: {terminated: {exitCode: 0}}}]
          containerStatuses: [{name: migrate, state: {terminated: {exitCode: 2}}}]
        """
    )
    assert health == Health(DEGRADED, 'container "migrate" failed with exit code 2')


def test_pod_failed_reports_oom_kill() -> None:
    """A Failed pod whose container was OOMKilled says so."""
    health = health_of(
        """
        apiVersion: v1
        kind: Pod
        spec: {restartPolicy: Never}
        status:
          phase: Failed
          containerStatuses: [{name: m, state: {terminated: {exitCode: 137, reason: OOMKilled}}}]
        """
    )
    assert health == Health(DEGRADED, "OOMKilled")


def test_pod_unknown_phase_is_unknown() -> None:
    """A phase outside Pending/Running/Succeeded/Failed is Unknown."""
    health = health_of("{apiVersion: v1, kind: Pod, status: {phase: Unknown}}")
    assert health.status is UNKNOWN
    assert "'Unknown'" in health.message


# --- Service and Ingress ---------------------------------------------------------------------


def test_cluster_ip_service_is_healthy() -> None:
    """A ClusterIP Service is always Healthy."""
    health = health_of("{apiVersion: v1, kind: Service, spec: {type: ClusterIP}}")
    assert health == Health(HEALTHY, "")


def test_load_balancer_without_ingress_is_progressing() -> None:
    """A LoadBalancer Service without status.loadBalancer.ingress is Progressing."""
    health = health_of(
        "{apiVersion: v1, kind: Service, spec: {type: LoadBalancer}, status: {loadBalancer: {}}}"
    )
    assert health.status is PROGRESSING
    assert "load balancer" in health.message


def test_load_balancer_with_ingress_is_healthy() -> None:
    """A LoadBalancer Service with an ingress address is Healthy."""
    health = health_of(
        """
        apiVersion: v1
        kind: Service
        spec: {type: LoadBalancer}
        status: {loadBalancer: {ingress: [{ip: 10.0.0.9}]}}
        """
    )
    assert health.status is HEALTHY


@pytest.mark.parametrize("api_version", ["networking.k8s.io/v1", "extensions/v1beta1"])
def test_ingress_health_follows_load_balancer_status(api_version: str) -> None:
    """An Ingress (either group) is Healthy with an address, Progressing without one."""
    body = load("{kind: Ingress, metadata: {name: i}, status: {loadBalancer: {}}}")
    body["apiVersion"] = api_version
    pending = assess(body)
    assert pending is not None
    assert pending.status is PROGRESSING
    body["status"]["loadBalancer"]["ingress"] = [{"hostname": "lb.example.com"}]
    assert assess(body) == Health(HEALTHY, "")


# --- PersistentVolumeClaim -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "expected"),
    [("Bound", HEALTHY), ("Pending", PROGRESSING), ("Lost", DEGRADED), ("Weird", UNKNOWN)],
)
def test_pvc_health_follows_phase(phase: str, expected: HealthStatus) -> None:
    """PVC phase Bound/Pending/Lost map to Healthy/Progressing/Degraded, anything else Unknown."""
    body = load("{apiVersion: v1, kind: PersistentVolumeClaim, status: {}}")
    body["status"]["phase"] = phase
    health = assess(body)
    assert health is not None
    assert health.status is expected


# --- Job -------------------------------------------------------------------------------------


def job(*conditions: dict[str, str]) -> dict[str, Any]:
    """A batch/v1 Job with the given status conditions."""
    body = load("{apiVersion: batch/v1, kind: Job, metadata: {name: j}, status: {active: 1}}")
    body["status"]["conditions"] = list(conditions)
    return body


def test_running_job_is_progressing() -> None:
    """A Job without Complete/Failed/Suspended conditions is Progressing."""
    health = assess(job())
    assert health is not None
    assert health.status is PROGRESSING


def test_complete_job_is_healthy() -> None:
    """A Job with a Complete condition is Healthy."""
    assert assess(job({"type": "Complete", "status": "True"})) == Health(HEALTHY, "")


def test_failed_job_is_degraded() -> None:
    """A Job with a Failed condition is Degraded with that condition's message."""
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }
    assert assess(job(failed)) == Health(DEGRADED, "Job has reached the specified backoff limit")


def test_suspended_job_is_suspended() -> None:
    """A Job with Suspended=True is Suspended."""
    suspended = {"type": "Suspended", "status": "True", "message": "Job suspended"}
    assert assess(job(suspended)) == Health(SUSPENDED, "Job suspended")


def test_resumed_job_keeps_argo_cd_quirk() -> None:
    """Like gitops-engine, a leftover Suspended=False condition counts as settled: Healthy."""
    health = assess(job({"type": "Suspended", "status": "False", "message": "Job resumed"}))
    assert health == Health(HEALTHY, "Job resumed")


# --- CronJob ---------------------------------------------------------------------------------


def cronjob(status: str | None) -> dict[str, Any]:
    """A batch/v1 CronJob with the given status YAML (None: no status at all)."""
    body = load("{apiVersion: batch/v1, kind: CronJob, metadata: {name: c}, spec: {}}")
    if status is not None:
        body["status"] = yaml.safe_load(status)
    return body


def test_suspended_cronjob_is_suspended() -> None:
    """spec.suspend makes a CronJob Suspended, as the bundled Argo CD Lua does."""
    body = cronjob("{}")
    body["spec"]["suspend"] = True
    assert assess(body) == Health(SUSPENDED, "CronJob is suspended")


def test_cronjob_without_status_is_progressing() -> None:
    """A CronJob with no status yet is Progressing 'Waiting for CronJob'."""
    assert assess(cronjob(None)) == Health(PROGRESSING, "Waiting for CronJob")


def test_cronjob_never_scheduled_is_healthy() -> None:
    """A CronJob that has not been scheduled yet is Healthy (status cannot tell more)."""
    health = assess(cronjob("{}"))
    assert health == Health(HEALTHY, "CronJob has not been scheduled yet")


def test_cronjob_without_success_is_healthy() -> None:
    """Scheduled but never succeeded is Healthy with a warning message."""
    health = assess(cronjob("{lastScheduleTime: '2024-05-01T10:00:00Z'}"))
    assert health is not None
    assert health.status is HEALTHY
    assert "never completed successfully" in health.message


def test_cronjob_failed_last_run_is_degraded() -> None:
    """Last success before last schedule with no active jobs means the last run failed."""
    status = "{lastScheduleTime: '2024-05-01T10:00:00Z', lastSuccessfulTime: '2024-05-01T09:00Z'}"
    assert assess(cronjob(status)) == Health(
        DEGRADED, "CronJob has not completed its last execution successfully"
    )


def test_cronjob_failed_last_run_with_yaml_timestamps() -> None:
    """Unquoted YAML timestamps (datetimes) compare like the API's strings."""
    status = "{lastScheduleTime: 2024-05-01T10:00:00Z, lastSuccessfulTime: '2024-05-01T09:00Z'}"
    health = assess(cronjob(status))
    assert health is not None
    assert health.status is DEGRADED


def test_cronjob_running_job_is_healthy() -> None:
    """An active job means the latest run is still going, so the CronJob stays Healthy."""
    status = """
    lastScheduleTime: '2024-05-01T10:00:00Z'
    lastSuccessfulTime: '2024-05-01T09:00:00Z'
    active: [{name: c-123, kind: Job}]
    """
    health = assess(cronjob(textwrap.dedent(status)))
    assert health is not None
    assert health.status is HEALTHY
    assert "job is running" in health.message


@pytest.mark.parametrize("success", ["2024-05-01T10:00:00Z", "2024-05-01T10:01Z"])
def test_cronjob_last_run_succeeded_is_healthy(success: str) -> None:
    """Last success at or after last schedule is Healthy."""
    status = f"{{lastScheduleTime: '2024-05-01T10:00:00Z', lastSuccessfulTime: '{success}'}}"
    assert assess(cronjob(status)) == Health(
        HEALTHY, "CronJob has completed its last execution successfully"
    )


def test_cronjob_bad_timestamp_is_unknown() -> None:
    """A timestamp that does not parse is Unknown naming the field."""
    health = assess(cronjob("{lastScheduleTime: yesterday}"))
    assert health is not None
    assert health.status is UNKNOWN
    assert "status.lastScheduleTime" in health.message


# --- APIService ------------------------------------------------------------------------------


def apiservice(*conditions: dict[str, str]) -> dict[str, Any]:
    """An APIService with the given status conditions."""
    body = load("{apiVersion: apiregistration.k8s.io/v1, kind: APIService, status: {}}")
    body["status"]["conditions"] = list(conditions)
    return body


def test_available_apiservice_is_healthy() -> None:
    """Available=True is Healthy with 'reason: message'."""
    available = {"type": "Available", "status": "True", "reason": "Passed", "message": "all ok"}
    assert assess(apiservice(available)) == Health(HEALTHY, "Passed: all ok")


def test_unavailable_apiservice_is_progressing() -> None:
    """Available=False is Progressing, not Degraded."""
    down = {
        "type": "Available",
        "status": "False",
        "reason": "MissingEndpoints",
        "message": "endpoints for service/metrics-server have no addresses",
    }
    health = assess(apiservice(down))
    assert health is not None
    assert health.status is PROGRESSING
    assert health.message.startswith("MissingEndpoints: endpoints")


def test_unprocessed_apiservice_is_progressing() -> None:
    """Without an Available condition the APIService is waiting to be processed."""
    assert assess(apiservice()) == Health(PROGRESSING, "Waiting to be processed")


# --- HorizontalPodAutoscaler -----------------------------------------------------------------

HPA_V2 = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
status:
  conditions:
  - {type: AbleToScale, status: "True", reason: ReadyForNewScale, message: recommended size}
  - {type: ScalingActive, status: "True", reason: ValidMetricFound, message: metrics ok}
  - {type: ScalingLimited, status: "False", reason: DesiredWithinRange, message: in range}
"""


def test_hpa_v2_able_to_scale_is_healthy() -> None:
    """An autoscaling/v2 HPA with AbleToScale=True is Healthy."""
    health = assess(load(HPA_V2))
    assert health == Health(HEALTHY, "recommended size")


def test_hpa_v2_failed_metric_is_degraded() -> None:
    """ScalingActive with FailedGetResourceMetric is Degraded even if AbleToScale is True."""
    body = load(HPA_V2)
    body["status"]["conditions"][1] = {
        "type": "ScalingActive",
        "status": "False",
        "reason": "FailedGetResourceMetric",
        "message": "unable to get metrics for resource cpu",
    }
    assert assess(body) == Health(DEGRADED, "unable to get metrics for resource cpu")


def test_hpa_v2_without_conditions_is_progressing() -> None:
    """An HPA with no conditions yet is Progressing 'Waiting to Autoscale'."""
    body = load(HPA_V2)
    del body["status"]
    assert assess(body) == Health(PROGRESSING, "Waiting to Autoscale")


def hpa_v1(conditions: str | None) -> dict[str, Any]:
    """An autoscaling/v1 HPA with the conditions annotation set to `conditions` (JSON)."""
    body = load("{apiVersion: autoscaling/v1, kind: HorizontalPodAutoscaler, metadata: {}}")
    if conditions is not None:
        key = "autoscaling.alpha.kubernetes.io/conditions"
        body["metadata"]["annotations"] = {key: conditions}
    return body


def test_hpa_v1_without_annotation_is_progressing() -> None:
    """An autoscaling/v1 HPA without the conditions annotation is Progressing."""
    assert assess(hpa_v1(None)) == Health(PROGRESSING, "Waiting to Autoscale")
    assert assess(hpa_v1("")) == Health(PROGRESSING, "Waiting to Autoscale")


def test_hpa_v1_annotation_degraded() -> None:
    """A v1 conditions annotation with FailedGetScale is Degraded."""
    raw = '[{"type":"AbleToScale","status":"False","reason":"FailedGetScale","message":"no"}]'
    assert assess(hpa_v1(raw)) == Health(DEGRADED, "no")


def test_hpa_v1_annotation_healthy() -> None:
    """A v1 conditions annotation with ScalingLimited=True is Healthy."""
    raw = '[{"type":"ScalingLimited","status":"True","reason":"TooFewReplicas","message":"min"}]'
    assert assess(hpa_v1(raw)) == Health(HEALTHY, "min")


def test_hpa_v1_bad_annotation_is_unknown() -> None:
    """An annotation that is not JSON is Unknown, naming the annotation."""
    health = assess(hpa_v1("{not json"))
    assert health is not None
    assert health.status is UNKNOWN
    assert "autoscaling.alpha.kubernetes.io/conditions" in health.message


# --- CustomResourceDefinition ----------------------------------------------------------------


def crd(*conditions: dict[str, str]) -> dict[str, Any]:
    """A CustomResourceDefinition with the given status conditions."""
    body = load("{apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, status: {}}")
    body["status"]["conditions"] = list(conditions)
    return body


def test_established_crd_is_healthy() -> None:
    """Established=True (names accepted) is Healthy."""
    health = assess(
        crd(
            {"type": "NamesAccepted", "status": "True"},
            {"type": "Established", "status": "True"},
        )
    )
    assert health == Health(HEALTHY, "CRD is healthy")


def test_crd_names_not_accepted_is_degraded() -> None:
    """NamesAccepted=False is Degraded with the conflict message."""
    health = assess(
        crd(
            {"type": "NamesAccepted", "status": "False", "message": '"widgets" is already in use'},
            {"type": "Established", "status": "False"},
        )
    )
    assert health is not None
    assert health.status is DEGRADED
    assert "already in use" in health.message


def test_crd_not_yet_established_is_progressing() -> None:
    """A CRD that is not established yet (or has no conditions) is Progressing."""
    waiting = assess(crd({"type": "Established", "status": "False", "message": "installing"}))
    assert waiting == Health(PROGRESSING, "CRD is not established yet: installing")
    fresh = assess(crd())
    assert fresh is not None
    assert fresh.status is PROGRESSING


def test_terminating_crd_is_progressing() -> None:
    """A CRD whose Terminating condition is True is Progressing."""
    health = assess(
        crd(
            {"type": "Established", "status": "True"},
            {"type": "Terminating", "status": "True", "message": "deleting instances"},
        )
    )
    assert health == Health(PROGRESSING, "CRD is being terminated: deleting instances")


# --- argoproj.io Application -----------------------------------------------------------------


def test_child_application_reports_its_own_health() -> None:
    """A child Application's status.health is passed through for app-of-apps."""
    health = health_of(
        """
        apiVersion: argoproj.io/v1alpha1
        kind: Application
        metadata: {name: child}
        status: {health: {status: Degraded, message: "child is broken"}}
        """
    )
    assert health == Health(DEGRADED, "child is broken")


def test_child_application_without_health_is_progressing() -> None:
    """A child Application with no health yet is Progressing."""
    health = health_of("{apiVersion: argoproj.io/v1alpha1, kind: Application, status: {}}")
    assert health == Health(PROGRESSING, "Waiting for application health")


def test_child_application_with_invalid_health_is_unknown() -> None:
    """An unrecognised health value in a child Application is Unknown."""
    health = health_of(
        "{apiVersion: argoproj.io/v1alpha1, kind: Application, status: {health: {status: Meh}}}"
    )
    assert health.status is UNKNOWN
    assert "'Meh'" in health.message


# --- aggregate -------------------------------------------------------------------------------


def key(kind: str, name: str, group: str = "apps") -> ResourceKey:
    """A namespaced resource key in namespace 'shop'."""
    return ResourceKey(group=group, kind=kind, namespace="shop", name=name)


def test_aggregate_of_nothing_is_healthy() -> None:
    """An app with no resources is Healthy."""
    assert aggregate([]) == Health(HEALTHY, "")


def test_aggregate_takes_worst_and_names_cause() -> None:
    """The worst live health wins and the message names the resource that caused it."""
    health = aggregate(
        [
            (key("Deployment", "web"), Health(HEALTHY), True),
            (key("Deployment", "api"), Health(PROGRESSING, "Waiting for rollout"), True),
            (key("StatefulSet", "db"), Health(DEGRADED, "pods crash"), True),
            (key("DaemonSet", "agent"), Health(SUSPENDED), True),
        ]
    )
    assert health == Health(DEGRADED, "StatefulSet/shop/db: pods crash")


def test_aggregate_suspended_beats_healthy() -> None:
    """Suspended is worse than Healthy, so one suspended resource suspends the app."""
    health = aggregate(
        [
            (key("Deployment", "web"), Health(HEALTHY), True),
            (key("CronJob", "nightly", "batch"), Health(SUSPENDED, "CronJob is suspended"), True),
        ]
    )
    assert health.status is SUSPENDED


def test_aggregate_unknown_is_worst() -> None:
    """Unknown outranks Degraded in Argo CD's order."""
    health = aggregate(
        [
            (key("Deployment", "web"), Health(DEGRADED, "x"), True),
            (key("Deployment", "api"), Health(UNKNOWN, "y"), True),
        ]
    )
    assert health.status is UNKNOWN


def test_aggregate_missing_resource_does_not_degrade() -> None:
    """A resource without a live object is ignored when others exist."""
    health = aggregate(
        [
            (key("Deployment", "web"), Health(HEALTHY), True),
            (key("Deployment", "new"), None, False),
            (key("Deployment", "old"), Health(MISSING), False),
        ]
    )
    assert health == Health(HEALTHY, "")


def test_aggregate_all_missing_is_missing() -> None:
    """An app whose resources all lack live objects is Missing."""
    health = aggregate(
        [(key("Deployment", "web"), None, False), (key("Service", "web", ""), None, False)]
    )
    assert health.status is MISSING


def test_aggregate_live_resource_without_health_prevents_missing() -> None:
    """A live object with no health (e.g. a ConfigMap) still counts as live: not Missing."""
    health = aggregate(
        [(key("Deployment", "web"), None, False), (key("ConfigMap", "cfg", ""), None, True)]
    )
    assert health == Health(HEALTHY, "")


def test_aggregate_ignores_missing_or_unknown_child_apps() -> None:
    """Child Applications that are Missing or Unknown do not affect the parent."""
    app = "argoproj.io"
    health = aggregate(
        [
            (key("Application", "a", app), Health(UNKNOWN, "?"), True),
            (key("Application", "b", app), Health(MISSING), True),
            (key("Deployment", "web"), Health(HEALTHY), True),
        ]
    )
    assert health == Health(HEALTHY, "")


def test_aggregate_counts_degraded_child_app() -> None:
    """A Degraded child Application does degrade the parent."""
    health = aggregate([(key("Application", "a", "argoproj.io"), Health(DEGRADED, "bad"), True)])
    assert health == Health(DEGRADED, "Application/shop/a: bad")


def test_aggregate_lists_at_most_three_causes() -> None:
    """With many equally bad resources the message lists three and counts the rest."""
    items = [(key("Deployment", f"d{i}"), Health(PROGRESSING), True) for i in range(5)]
    health = aggregate(items)
    assert health.status is PROGRESSING
    assert health.message == (
        "Deployment/shop/d0; Deployment/shop/d1; Deployment/shop/d2 and 2 more"
    )
