"""Beyond one machine: the app's OCI image and its Kubernetes objects, from the same ``lichen.yaml``.

``containerfiles`` and ``images`` make and build the image (``lichen
build``); ``workloads``, ``gateway_manifests``, ``job_manifests``,
``monitoring_manifests`` and ``canary_manifests`` build every object as plain
data, and ``charts`` writes them as a Helm chart or plain manifests
(``lichen render``). Everything but the builder call is a pure function of
the spec; docs/kubernetes.md maps every field to its object.
"""
