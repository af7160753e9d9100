"""gitopsd's own CustomResourceDefinitions for Argo Rollouts' kinds (`argoproj.io/v1alpha1`), so
`kubectl get rollout` works on a cluster without Argo Rollouts installed.

Structural schemas: the fields the controller reads and writes are typed; pod templates, metric
providers and the parts of the spec gitopsd does not act on are kept as written
(`x-kubernetes-preserve-unknown-fields`), as Argo Rollouts' own CRDs do for the pod template.
Each kind has the status subresource, so only the controller's status writes change status.
"""

from __future__ import annotations

from typing import Any

from daemon.rollouts.spec import GROUP, VERSION

Schema = dict[str, Any]

_ANY: Schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_INT_OR_STRING: Schema = {"x-kubernetes-int-or-string": True}


def _obj(properties: dict[str, Schema], *, open_: bool = True) -> Schema:
    out: Schema = {"type": "object", "properties": properties}
    if open_:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _list(items: Schema) -> Schema:
    return {"type": "array", "items": items}


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer", "format": "int32"}
_BOOL: Schema = {"type": "boolean"}
_ARGS = _list(_obj({"name": _STR, "value": _STR, "valueFrom": _ANY}))
_ANALYSIS = _obj(
    {
        "templates": _list(_obj({"templateName": _STR, "clusterScope": _BOOL})),
        "args": _ARGS,
        "startingStep": _INT,
        "dryRun": _list(_obj({"metricName": _STR})),
    }
)
_STEP = _obj(
    {
        "setWeight": _INT,
        "pause": _obj({"duration": _INT_OR_STRING}),
        "setCanaryScale": _obj({"replicas": _INT, "weight": _INT, "matchTrafficWeight": _BOOL}),
        "analysis": _ANALYSIS,
        "setHeaderRoute": _ANY,
        "setMirrorRoute": _ANY,
    }
)
_ROLLOUT_SPEC = _obj(
    {
        "replicas": _INT,
        "selector": _ANY,
        "template": _ANY,
        "workloadRef": _obj({"apiVersion": _STR, "kind": _STR, "name": _STR, "scaleDown": _STR}),
        "minReadySeconds": _INT,
        "revisionHistoryLimit": _INT,
        "paused": _BOOL,
        "progressDeadlineSeconds": _INT,
        "progressDeadlineAbort": _BOOL,
        "restartAt": {"type": "string", "format": "date-time"},
        "strategy": _obj(
            {
                "canary": _obj(
                    {
                        "steps": _list(_STEP),
                        "maxSurge": _INT_OR_STRING,
                        "maxUnavailable": _INT_OR_STRING,
                        "canaryService": _STR,
                        "stableService": _STR,
                        "trafficRouting": _ANY,
                        "analysis": _ANALYSIS,
                        "scaleDownDelaySeconds": _INT,
                        "abortScaleDownDelaySeconds": _INT,
                        "minPodsPerReplicaSet": _INT,
                    }
                ),
                "blueGreen": _obj(
                    {
                        "activeService": _STR,
                        "previewService": _STR,
                        "autoPromotionEnabled": _BOOL,
                        "autoPromotionSeconds": _INT,
                        "scaleDownDelaySeconds": _INT,
                        "abortScaleDownDelaySeconds": _INT,
                        "previewReplicaCount": _INT,
                        "prePromotionAnalysis": _ANALYSIS,
                        "postPromotionAnalysis": _ANALYSIS,
                    }
                ),
            }
        ),
    }
)
_CONDITIONS = _list(
    _obj(
        {
            "type": _STR,
            "status": _STR,
            "reason": _STR,
            "message": _STR,
            "lastUpdateTime": _STR,
            "lastTransitionTime": _STR,
        }
    )
)
_ROLLOUT_STATUS = _obj(
    {
        "phase": _STR,
        "message": _STR,
        "abort": _BOOL,
        "abortedAt": _STR,
        "promoteFull": _BOOL,
        "controllerPause": _BOOL,
        "pauseConditions": _list(_obj({"reason": _STR, "startTime": _STR})),
        "currentPodHash": _STR,
        "currentStepHash": _STR,
        "currentStepIndex": _INT,
        "stableRS": _STR,
        "replicas": _INT,
        "updatedReplicas": _INT,
        "readyReplicas": _INT,
        "availableReplicas": _INT,
        "selector": _STR,
        "observedGeneration": _STR,
        "collisionCount": _INT,
        "conditions": _CONDITIONS,
        "canary": _ANY,
        "blueGreen": _ANY,
    }
)


def _crd(
    kind: str,
    plural: str,
    short: list[str],
    spec: Schema,
    status: Schema,
    *,
    scope: str = "Namespaced",
    columns: list[dict[str, Any]] | None = None,
    scale: bool = False,
) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "apiVersion": _STR,
                    "kind": _STR,
                    "metadata": {"type": "object"},
                    "spec": spec,
                    "status": status,
                },
            }
        },
        "subresources": subresources,
    }
    if columns:
        version["additionalPrinterColumns"] = columns
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/managed-by": "gitopsd"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
            },
            "scope": scope,
            "versions": [version],
        },
    }


def _col(name: str, path: str, kind: str = "integer") -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path}


_ANALYSIS_TEMPLATE_SPEC = _obj({"metrics": _list(_ANY), "args": _ARGS, "dryRun": _list(_ANY)})
_RUN_STATUS = _obj(
    {
        "phase": _STR,
        "message": _STR,
        "startedAt": _STR,
        "completedAt": _STR,
        "runSummary": _ANY,
        "metricResults": _list(_ANY),
    }
)


def definitions() -> list[dict[str, Any]]:
    """The four CRDs, Rollout first."""
    return [
        _crd(
            "Rollout",
            "rollouts",
            ["ro"],
            _ROLLOUT_SPEC,
            _ROLLOUT_STATUS,
            scale=True,
            columns=[
                _col("Desired", ".spec.replicas"),
                _col("Current", ".status.replicas"),
                _col("Up-to-date", ".status.updatedReplicas"),
                _col("Available", ".status.availableReplicas"),
                _col("Phase", ".status.phase", "string"),
                _col("Age", ".metadata.creationTimestamp", "date"),
            ],
        ),
        _crd("AnalysisTemplate", "analysistemplates", ["at"], _ANALYSIS_TEMPLATE_SPEC, _ANY),
        _crd(
            "ClusterAnalysisTemplate",
            "clusteranalysistemplates",
            ["cat"],
            _ANALYSIS_TEMPLATE_SPEC,
            _ANY,
            scope="Cluster",
        ),
        _crd(
            "AnalysisRun",
            "analysisruns",
            ["ar"],
            _obj({"metrics": _list(_ANY), "args": _ARGS, "terminate": _BOOL}),
            _RUN_STATUS,
            columns=[
                _col("Status", ".status.phase", "string"),
                _col("Age", ".metadata.creationTimestamp", "date"),
            ],
        ),
    ]


KINDS = {"Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate", "AnalysisRun"}
