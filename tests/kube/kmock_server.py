#!/usr/bin/env python3
"""
Kubernetes API emulator for Crossfade's tests: kmock's in-memory emulator run as its own HTTP server.

    python kmock_server.py --port 0              # patched emulator (what the tests use)
    python kmock_server.py --port 0 --plain      # plain kmock.KubernetesEmulator, for comparison
    python kmock_server.py --check-hooks         # exit 0 iff the kmock internals patched below exist

Prints "READY <port> <class>" on stdout once listening; stops on SIGTERM/SIGINT, and with
--exit-on-stdin-eof also when its stdin closes (the Rust test helper holds the other end, so a test
process that dies without cleaning up does not leave an emulator behind).
Listens on 127.0.0.1 only, plain HTTP, no auth.

Credits: kmock (https://github.com/nolar/kmock, MIT, by Sergey Vasilyev) provides the emulator; this
launcher and its PatchedEmulator come from the evaluation kept in the project's shared reference
(kube-emulator/kmock_server.py and REPORT.md, 2026-11-30). Pin kmock==0.8: PatchedEmulator relies on
private internals (see HOOKS); check_hooks() fails loudly when an upgrade removes one.
docs/kubernetes.md lists where this emulator differs from a real API server.
"""
import argparse
import asyncio
import copy
import datetime
import itertools
import importlib.metadata
import json
import re
import signal
import sys
import threading
import uuid
from typing import Any

import attrs
import aiohttp.web
import kmock
from kmock import KubernetesEmulator, KubernetesError, Server, action

# Resources the controller needs. Discovery (/api/v1, /apis/<g>/<v>) is served from these.
RESOURCES: dict[str, dict[str, Any]] = {
    'v1/configmaps': dict(kind='ConfigMap', singular='configmap', namespaced=True),
    'v1/services': dict(kind='Service', singular='service', namespaced=True, subresources={'status'}),
    # Secrets: the controller reads headersFrom[].valueFrom.secretKeyRef values (get only). Stored
    # as written: unlike a real API server, stringData is not merged into data, data is not checked
    # to be base64, and `type` is neither defaulted nor validated; so tests write `data`.
    'v1/secrets': dict(kind='Secret', singular='secret', namespaced=True),
    # Pods: the controller lists each backend's (image digests); the tests play the kubelet.
    'v1/pods': dict(kind='Pod', singular='pod', namespaced=True, subresources={'status'}),
    'v1/namespaces': dict(kind='Namespace', singular='namespace', namespaced=False),
    'v1/events': dict(kind='Event', singular='event', namespaced=True),
    'events.k8s.io/v1/events': dict(kind='Event', singular='event', namespaced=True),
    'apps/v1/deployments': dict(kind='Deployment', singular='deployment', namespaced=True,
                                subresources={'status', 'scale'}),
    'coordination.k8s.io/v1/leases': dict(kind='Lease', singular='lease', namespaced=True),
    'discovery.k8s.io/v1/endpointslices': dict(kind='EndpointSlice', singular='endpointslice', namespaced=True),
    'crossfade.dev/v1alpha1/trafficshifts': dict(kind='TrafficShift', singular='trafficshift',
                                                     namespaced=True, subresources={'status'},
                                                     shortnames={'ts'}),
}
VERBS = {'create', 'delete', 'get', 'list', 'patch', 'update', 'watch'}

# Resources whose status is a subresource: /status writes only status; main writes ignore status.
STATUS_SUBRESOURCE = {k.rsplit('/', 1)[-1] for k, v in RESOURCES.items() if 'status' in v.get('subresources', ())}


class Conflict(KubernetesError):
    pass


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _merge_patch_from(old: Any, new: Any) -> Any:
    """An RFC-7386 merge patch turning `old` into `new` (None deletes keys)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, val in new.items():
        if key not in old:
            patch[key] = val
        elif old[key] != val:
            patch[key] = _merge_patch_from(old[key], val) if isinstance(val, dict) and isinstance(old[key], dict) else val
    return patch


def _without_nulls(obj: Any) -> Any:
    """`obj` without the null values of its objects, as a merge patch stores it (lists kept whole)."""
    if not isinstance(obj, dict):
        return obj
    return {k: _without_nulls(v) for k, v in obj.items() if v is not None}


def _leaves(obj: Any, path: tuple = ()) -> list[tuple]:
    """The paths of `obj`'s leaves: values that are not maps (lists are atomic), and empty maps."""
    if not isinstance(obj, dict) or not obj:
        return [path]
    return [leaf for k, v in obj.items() for leaf in _leaves(v, path + (k,))]


def _has(obj: Any, path: tuple) -> bool:
    """Whether `path` is in `obj`, or is overwritten by a non-map value on its way."""
    for key in path:
        if not isinstance(obj, dict):
            return True
        if key not in obj:
            return False
        obj = obj[key]
    return True


def _drop(obj: Any, path: tuple, keep: Any = None) -> None:
    """Deletes `path` from `obj`, then the maps it leaves empty unless `keep` has them."""
    if not path or not isinstance(obj, dict) or path[0] not in obj:
        return
    if len(path) == 1:
        del obj[path[0]]
        return
    inner = obj[path[0]]
    inner_keep = keep.get(path[0]) if isinstance(keep, dict) else None
    _drop(inner, path[1:], inner_keep)
    if inner == {} and not (isinstance(keep, dict) and path[0] in keep):
        del obj[path[0]]


def _changed(old: Any, new: Any) -> list[tuple]:
    """The leaf paths of `new` whose value differs from `old`'s (added ones included)."""
    return [p for p in _leaves(new) if _get(old, p) != _get(new, p)]


def _get(obj: Any, path: tuple) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


# What server-side apply owns, approximated (session 43): the fields each field manager applied
# last, by object. A field a manager applied before and leaves out of its next apply is removed,
# as a real API server removes fields no manager owns any longer; a write that changes a field
# (any other write, or another manager's apply) takes it from the managers that applied it, as
# ownership moves on a real server. Not modelled: conflicts (every apply acts as forced), fields
# two managers own at once with the same value (the writer takes them), managedFields.
_SERVER_OWNED = {'uid', 'resourceVersion', 'generation', 'creationTimestamp', 'name', 'namespace',
                 'managedFields', 'deletionTimestamp'}


# patchMergeKey of the common list fields (strategic merge patch); others are replaced wholesale.
_SMP_KEYS = {'containers': 'name', 'initContainers': 'name', 'ephemeralContainers': 'name', 'env': 'name',
             'volumes': 'name', 'volumeMounts': 'mountPath', 'ports': 'containerPort', 'conditions': 'type',
             'imagePullSecrets': 'name', 'ownerReferences': 'uid', 'tolerations': 'key'}


def _strategic_merge(old: Any, patch: Any, field: str = '') -> Any:
    """A small subset of strategic-merge-patch: dicts merge, keyed lists merge by key, None deletes."""
    if isinstance(old, dict) and isinstance(patch, dict):
        out = dict(old)
        for k, v in patch.items():
            if k.startswith('$'):
                continue  # directives ($patch, $retainKeys, $setElementOrder) not supported
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _strategic_merge(old.get(k), v, k)
        return out
    key = _SMP_KEYS.get(field)
    if key and isinstance(old, list) and isinstance(patch, list) and all(isinstance(x, dict) for x in old + patch):
        out = [dict(x) for x in old]
        for item in patch:
            idx = next((i for i, x in enumerate(out) if x.get(key) == item.get(key)), None)
            if item.get('$patch') == 'delete':
                if idx is not None:
                    out.pop(idx)
            elif idx is None:
                out.append(item)
            else:
                out[idx] = _strategic_merge(out[idx], item)
        return out
    return copy.deepcopy(patch)


def _pointer_missing(obj: Any, pointer: str) -> bool:
    """Whether JSON pointer `pointer` (RFC 6901) names nothing in `obj`."""
    for part in [p.replace('~1', '/').replace('~0', '~') for p in pointer.split('/')[1:]]:
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return True
    return False


def _labels_match(obj: dict, selector: str | None) -> bool:
    """Equality-based label selectors only: a=b, a!=b, a, !a (comma-separated)."""
    if not selector:
        return True
    labels = (obj.get('metadata') or {}).get('labels') or {}
    for term in filter(None, (t.strip() for t in selector.split(','))):
        if '!=' in term:
            k, v = term.split('!=', 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif '==' in term or '=' in term:
            k, v = term.replace('==', '=').split('=', 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith('!'):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


# Object names and label values as a real API server checks them (apimachinery's validation):
# a Service's name is a DNS-1035 label, every other object's a DNS-1123 subdomain, a label value
# at most 63 characters of [A-Za-z0-9_.-] starting and ending alphanumeric. Refused with 422
# Invalid, naming the field, so that a test with a name a cluster refuses fails here too.
_DNS1035 = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')
_DNS1123_SUBDOMAIN = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
_LABEL_VALUE = re.compile(r'^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$')


def _invalid(plural: str, name: str, field: str, value: str, why: str) -> KubernetesError:
    return KubernetesError(status=422, reason='Invalid', details={}, message=(
        f'{plural} "{name}" is invalid: {field}: Invalid value: {json.dumps(value)}: {why}'))


def _check_names(plural: str, data: dict) -> None:
    name = (data.get('metadata') or {}).get('name') or ''
    if plural == 'services':
        if len(name) > 63 or not _DNS1035.match(name):
            raise _invalid(plural, name, 'metadata.name', name, 'a DNS-1035 label must consist of lower case '
                           'alphanumeric characters or \'-\', start with an alphabetic character, and end with an '
                           'alphanumeric character, at most 63 characters')
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        raise _invalid(plural, name, 'metadata.name', name, 'a lowercase RFC 1123 subdomain must consist of lower '
                       'case alphanumeric characters, \'-\' or \'.\', at most 253 characters')
    _check_labels(plural, data)


def _check_labels(plural: str, data: dict) -> None:
    meta = data.get('metadata') or {}
    for key, value in (meta.get('labels') or {}).items():
        value = value if isinstance(value, str) else ''
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise _invalid(plural, meta.get('name') or '', f'metadata.labels', value,
                           'a valid label must be an empty string or consist of alphanumeric characters, '
                           '\'-\', \'_\' or \'.\', and must start and end with an alphanumeric character, '
                           'at most 63 characters')


@attrs.define(kw_only=True)
class PatchedEmulator(KubernetesEmulator):
    """
    KubernetesEmulator + the minimum needed for kube-rs' watcher/Controller/SSA/leases:
    - metadata.uid/resourceVersion/creationTimestamp/generation stamped on every write;
      list returns the current resourceVersion instead of '...'.
    - PUT (replace) on named objects and on /status (kmock answers 404 for PUT).
    - optimistic concurrency: metadata.resourceVersion in a PUT/PATCH body must match (409), and
      a DELETE's preconditions (uid, resourceVersion) too.
    - server-side apply (application/apply-patch+yaml) creates the object if it is missing, and
      removes the fields its field manager applied before and leaves out now (`_own`, approximated).
    - /status writes change only .status; main-resource writes keep .status (status subresource).
    - labelSelector honoured (equality-based) on list & watch; watch honours timeoutSeconds,
      resourceVersion (replays only newer objects) and sendInitialEvents (+ the end BOOKMARK).
    - a subset of strategic merge patch (keyed lists merge); no-op writes neither bump nor emit.
    - machine-readable error reasons (NotFound, AlreadyExists, Conflict); served requests forgotten.
    - object names (a Service's a DNS-1035 label, any other a DNS-1123 subdomain) and label values
      (at most 63 characters) are checked as a real API server does: 422 Invalid.
    Not done: SSA conflicts and managedFields, fieldSelector, pagination, 410 Gone, defaulting,
    admission and schema validation (names and labels apart), garbage collection,
    Deployment/ReplicaSet/Pod controllers.
    """
    forget_requests: bool = True
    # With --audit FILE: one JSON line per API request, {"user", "verb", "group", "resource",
    # "namespace"} (namespace "" for a request across every namespace or a cluster-scoped one), with
    # the RBAC verb a real API server would authorise (so tests can check a ClusterRole against what
    # a client really did). `user` is the bearer token, or "" without one.
    audit: Any = None
    # The empty store is at resourceVersion 1 and the first write gets 2. (The reference answered a
    # list of the empty store with "1" and then gave the first object "1" too, so a watch started from
    # that list skipped an object created between the list and the watch.)
    _rv: Any = attrs.field(factory=lambda: itertools.count(2), init=False)
    _last_rv: int = attrs.field(default=1, init=False)
    # (resource, namespace, name, subresource) -> {field manager: (uid, the config it applied)}.
    _applied: Any = attrs.field(factory=dict, init=False)

    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def _current(self, request: kmock.Request) -> dict | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return copy.deepcopy(self.objects[key].raw)
        return None

    def _audit(self, request: kmock.Request) -> None:
        if self.audit is None or request.resource is None or not request.resource.plural:
            return  # discovery (/api, /apis/<group>/<version>) needs no RBAC rule
        method = str(request.method).upper().rsplit('.', 1)[-1]
        params = request.params or {}
        if method == 'GET':
            watch = str(params.get('watch', '')).lower() in ('true', '1')
            verbs = ['watch' if watch else 'get' if request.name else 'list']
        else:
            verbs = [{'POST': 'create', 'PUT': 'update', 'PATCH': 'patch', 'DELETE': 'delete'}.get(method, method.lower())]
            ctype = request.headers.get('Content-Type', '') or request.headers.get('content-type', '')
            if method == 'PATCH' and 'apply-patch' in ctype and self._current(request) is None:
                verbs.append('create')  # server-side apply of a missing object is authorised as create too
        auth = request.headers.get('Authorization', '') or request.headers.get('authorization', '')
        user = auth.removeprefix('Bearer ').strip()
        resource = request.resource.plural + (f'/{request.subresource}' if request.subresource else '')
        for verb in verbs:
            line = json.dumps({'user': user, 'verb': verb, 'group': request.resource.group or '', 'resource': resource,
                               'namespace': request.namespace or ''})
            self.audit.write(line + '\n')
        self.audit.flush()

    # With --forbid NAMESPACE/PLURAL: every request for that resource in that namespace answers
    # 403 Forbidden, as a real API server does without an RBAC grant there (kmock enforces no RBAC).
    forbid: Any = attrs.field(factory=set)
    # With --internal-error NAMESPACE/PLURAL=N: the first N requests for it answer 500 (etcd timing
    # out under an API server), the later ones are served. (Not 503 or 429: kube-rs' client
    # retries those by itself, so its caller would never see them.)
    internal_error: Any = attrs.field(factory=dict)
    # With --deny-update NAMESPACE/PLURAL/NAME: every PATCH or PUT of that object (not of its
    # subresources) answers 403, as a validating admission webhook that denies it does; reads,
    # creation and deletion are served.
    deny_update: Any = attrs.field(factory=set)

    def _refusal(self, request: kmock.Request) -> KubernetesError | None:
        if request.resource is None or not request.resource.plural:
            return None
        key = f'{request.namespace or ""}/{request.resource.plural}'
        if key in self.forbid:
            group = request.resource.group or ''
            return KubernetesError(status=403, reason='Forbidden', details={}, message=(
                f'{request.resource.plural}.{group} is forbidden: User "emulator" cannot list resource '
                f'"{request.resource.plural}" in API group "{group}" in the namespace "{request.namespace}"'))
        method = str(request.method).upper().rsplit('.', 1)[-1]
        if (f'{key}/{request.name}' in self.deny_update and method in ('PATCH', 'PUT')
                and not request.subresource):
            return KubernetesError(status=403, reason='Forbidden', details={}, message=(
                f'admission webhook "deny.kmock.test" denied the request: '
                f'{request.resource.plural} {request.name} may not be changed (--deny-update)'))
        if self.internal_error.get(key, 0) > 0:
            self.internal_error[key] -= 1
            return KubernetesError(status=500, reason='InternalError', details={},
                                   message='etcdserver: request timed out')
        return None

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self._audit(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return await self._render_error(refusal)
        try:
            new = self._rewrite(request)
        except KubernetesError as e:
            return await self._render_error(e)
        if new is not request:
            # kmock's DSL matches requests by identity against its request log: swap the entry.
            idx = next(i for i, r in enumerate(self._requests) if r is request)
            self._requests[idx] = new
        try:
            return await super()._handle(new)
        finally:
            # kmock keeps every request forever (for test assertions) and re-filters that whole log
            # on each request: O(n^2), ~6 req/s after 1000 requests. Forget the served ones.
            if self.forget_requests:
                self._requests[:] = [r for r in self._requests if r is not new]

    def _rewrite(self, request: kmock.Request) -> kmock.Request:
        if request.resource is None:
            return request
        plural = request.resource.plural
        ctype = request.headers.get('Content-Type', '')
        has_status_sub = plural in STATUS_SUBRESOURCE

        # SSA on a missing object == create.
        if request.method == 'PATCH' and 'apply-patch' in ctype and self._current(request) is None:
            data = dict(request.data or {})
            data.setdefault('metadata', {})
            data['metadata'].setdefault('name', request.name)
            if request.namespace:
                data['metadata'].setdefault('namespace', request.namespace)
            request = attrs.evolve(request, action=action.CREATE, name=None, subresource=None, data=data)

        if request.action == action.CREATE and isinstance(request.data, dict):
            data = copy.deepcopy(request.data)
            meta = data.setdefault('metadata', {})
            if not meta.get('name') and meta.get('generateName'):
                meta['name'] = meta['generateName'] + uuid.uuid4().hex[:5]
            _check_names(plural, data)
            if request.namespace:
                meta.setdefault('namespace', request.namespace)
            meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(),
                        creationTimestamp=_now(), generation=1)
            key = (request.resource, request.namespace or meta.get('namespace'), meta.get('name'))
            if key in self.objects and not self.objects[key].deleted:
                raise Conflict(status=409, reason='AlreadyExists', message=f'{plural} "{meta.get("name")}" already exists')
            self._applied.pop(key + (None,), None)  # an earlier object's of that name, if any
            if request.method == 'PATCH' and 'apply-patch' in ctype:
                manager = (request.params or {}).get('fieldManager', '')
                self._applied[key + (None,)] = {manager: (meta['uid'], copy.deepcopy(request.data))}
            return attrs.evolve(request, data=data)

        # DELETE of an object with finalizers only marks it (kmock does that), and like the real
        # server (apiserver rest.BeforeDelete) bumps its resourceVersion and generation.
        if request.method == 'DELETE' and request.name is not None and request.subresource is None:
            old = self._current(request)
            meta = (old or {}).get('metadata', {})
            # DeleteOptions.preconditions (uid, resourceVersion), which kmock ignores: a mismatch is
            # 409 Conflict and the object stays, as the API server answers (session 41).
            pre = request.data.get('preconditions') if isinstance(request.data, dict) else None
            for field, word in (('uid', 'UID'), ('resourceVersion', 'ResourceVersion')):
                want = (pre or {}).get(field)
                if old is not None and want is not None and want != meta.get(field):
                    raise Conflict(status=409, reason='Conflict', message=(
                        f'Operation cannot be fulfilled on {plural} "{request.name}": Precondition '
                        f'failed: {word} in precondition: {want}, {word} in object meta: {meta.get(field)}'))
            if old is not None and meta.get('finalizers') and not meta.get('deletionTimestamp'):
                patch = {'metadata': {'deletionTimestamp': _now(), 'resourceVersion': self._next_rv(),
                                      'generation': meta.get('generation', 1) + 1}}
                return attrs.evolve(request, method='PATCH', action=action.UPDATE, data=patch)
            return request

        if request.name is None or request.method not in ('PUT', 'PATCH'):
            return request
        if request.subresource not in (None, 'status'):
            return request  # e.g. /scale: leave to kmock
        old = self._current(request)
        if old is None:
            raise kmock.KubernetesObjectNotFoundError()

        # Compute the full new object the way the real server would.
        if request.method == 'PUT':
            new = copy.deepcopy(request.data or {})
        elif 'strategic-merge-patch' in ctype:
            # A copy: the merge shares the sub-objects the patch does not touch (metadata among
            # them) with `old`, and the server-owned metadata set below must not reach `old`, or
            # the diff against it loses the new generation and resourceVersion (trial 26).
            new = copy.deepcopy(_strategic_merge(old, request.data or {}))
        else:
            from kmock._internal import dicts  # merge (RFC 7386) & JSON patch (RFC 6902)
            data = request.data or {}
            if isinstance(data, list):
                # The API server's JSON patch (evanphx/json-patch) reads a missing path as null, so
                # `test /metadata/finalizers == null` passes on an object without finalizers (kube's
                # finalizer helper relies on it); python's jsonpatch fails it.
                data = [op for op in data if not (op.get('op') == 'test' and op.get('value') is None
                                                  and _pointer_missing(old, op.get('path', '')))]
            new = copy.deepcopy(dict(dicts.patch_dict(old, data)))

        owners = self._own(request, ctype, old, new)
        _check_labels(plural, new)
        body_rv = ((request.data or {}).get('metadata') or {}).get('resourceVersion') if isinstance(request.data, dict) else None
        if body_rv and body_rv != old['metadata'].get('resourceVersion'):
            raise Conflict(status=409, reason='Conflict',
                           message='the object has been modified; please apply your changes to the latest version and try again')
        # Only a write the server takes changes who owns what (a 422 or a 409 above changes nothing).
        self._applied[owners[0]] = owners[1]

        if has_status_sub and request.subresource == 'status':
            result = copy.deepcopy(old)
            if 'status' in new:
                result['status'] = new['status']
            else:
                result.pop('status', None)
            new = result
        elif has_status_sub:
            if 'status' in old:
                new['status'] = old['status']
            else:
                new.pop('status', None)
        # Server-owned metadata.
        meta = new.setdefault('metadata', {})
        for k in ('uid', 'creationTimestamp', 'name', 'namespace'):
            if k in old.get('metadata', {}):
                meta[k] = old['metadata'][k]
        gen = old['metadata'].get('generation', 1)
        if request.subresource != 'status' and new.get('spec') != old.get('spec'):
            gen += 1
        meta['generation'] = gen
        meta['resourceVersion'] = old['metadata'].get('resourceVersion')
        # No-op write: the real server neither bumps the resourceVersion nor emits an event. A
        # null the emulator cannot store (it stores by merge patch, where null deletes) changes
        # nothing stored: `rolloutState`'s `null`s, which a real server keeps
        # (x-kubernetes-preserve-unknown-fields), made each identical PUT a write (session 39).
        if _without_nulls(new) == old:
            return attrs.evolve(request, method='GET', action=action.FETCH, data=None, subresource=None)
        meta['resourceVersion'] = self._next_rv()
        patch = _merge_patch_from(old, new)
        return attrs.evolve(request, method='PATCH', action=action.UPDATE, data=patch)

    def _own(self, request: kmock.Request, ctype: str, old: dict, new: dict) -> tuple:
        """Field ownership of server-side apply, approximated (see `_applied`): removes from `new` the
        fields an apply leaves out that the same manager applied before, and gives the fields a
        write changes to the writer. Returns `(key, records)` for `_applied`, which the caller
        stores only once the write is taken."""
        key = (request.resource, request.namespace, request.name, request.subresource)
        uid = old.get('metadata', {}).get('uid')
        records = {m: (r[0], copy.deepcopy(r[1])) for m, r in self._applied.get(key, {}).items()
                   if r[0] == uid}
        manager = None
        if request.method == 'PATCH' and 'apply-patch' in ctype and isinstance(request.data, dict):
            manager = (request.params or {}).get('fieldManager', '')
            before = records.get(manager, (uid, {}))[1]
            for path in _leaves(before):
                server_owned = path[:1] == ('metadata',) and path[1:2] and path[1] in _SERVER_OWNED
                if path[:1] not in (('apiVersion',), ('kind',)) and not server_owned \
                        and not _has(request.data, path):
                    _drop(new, path, request.data)
        changed = _changed(old, new)
        for other, (_, applied) in records.items():
            if other != manager:
                for path in changed:
                    _drop(applied, path, None)
        if manager is not None:
            records[manager] = (uid, copy.deepcopy(request.data))
        return key, records

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # kmock uses free-text reasons ("Object Not Found", "Object Already Exists"); kube-rs'
        # Status::is_not_found()/is_already_exists() (get_opt, Entry API, lease managers) need
        # the machine-readable StatusReason values.
        if isinstance(exc, KubernetesError) and not isinstance(exc, Conflict):
            reason = {404: 'NotFound', 409: 'AlreadyExists'}.get(exc.status, exc.reason)
            exc = KubernetesError(status=exc.status, reason=reason, message=exc.message, details={})
        return await super()._render_error(exc)

    async def _serve_list(self, request: kmock.Request) -> Any:
        result = await super()._serve_list(request)
        result['metadata']['resourceVersion'] = str(self._last_rv)
        sel = request.params.get('labelSelector')
        result['items'] = [o for o in result['items'] if _labels_match(o, sel)]
        # A real API server names the list's kind; kubectl refuses a list without it ("Object
        # 'Kind' is missing"), which docs/kubernetes.md's "Try it without a cluster" relies on.
        res = request.resource
        info = RESOURCES.get(f'{res.group}/{res.version}/{res.plural}' if res.group else f'{res.version}/{res.plural}')
        if info is not None:
            result.setdefault('apiVersion', f'{res.group}/{res.version}' if res.group else res.version)
            result.setdefault('kind', info['kind'] + 'List')
        return result

    async def _serve_watch(self, request: kmock.Request):
        """
        Watch with: labelSelector, timeoutSeconds, resourceVersion (replay only objects newer than it),
        sendInitialEvents=true (+ the k8s.io/initial-events-end BOOKMARK that kube-rs' streaming_lists needs).
        """
        yield b''
        params = request.params
        sel = params.get('labelSelector')
        rv = params.get('resourceVersion') or ''
        send_initial = params.get('sendInitialEvents') == 'true'
        timeout = float(params.get('timeoutSeconds') or 0) or None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None

        def matches(obj: dict) -> bool:
            meta = obj.get('metadata') or {}
            return ((request.namespace is None or meta.get('namespace') == request.namespace)
                    and (request.name is None or meta.get('name') == request.name)
                    and _labels_match(obj, sel))

        bus = self._buses[request.resource]
        async with self._lock:
            mark = await bus.mark()
            objs = [copy.deepcopy(o.raw) for (res, _, _), o in self.objects.items() if res == request.resource and not o.deleted]
            current_rv = str(self._last_rv)
        try:
            replay_all = send_initial or rv in ('', '0')
            for obj in objs:
                obj_rv = int((obj.get('metadata') or {}).get('resourceVersion') or 0)
                if matches(obj) and (replay_all or obj_rv > int(rv or 0)):
                    yield {'type': 'ADDED', 'object': obj}
            if send_initial:
                info = self.resources[request.resource]
                gv = f'{request.resource.group}/{request.resource.version}'.lstrip('/')
                yield {'type': 'BOOKMARK', 'object': {
                    'apiVersion': gv, 'kind': info.kind,
                    'metadata': {'resourceVersion': current_rv,
                                 'annotations': {'k8s.io/initial-events-end': 'true'}}}}
            agen = bus.stream(since=mark).__aiter__()
            while True:
                try:
                    remaining = None if deadline is None else max(0.0, deadline - loop.time())
                    ev = await asyncio.wait_for(agen.__anext__(), remaining)
                except (StopAsyncIteration, asyncio.TimeoutError):
                    return
                if isinstance(ev, dict) and matches(ev.get('object') or {}):
                    yield ev
        finally:
            await bus.unmark(mark)


# The kmock internals PatchedEmulator overrides or reads. A kmock release that renames one breaks the
# emulator in ways that show up as confusing test failures, so the launcher refuses to start instead.
KMOCK_VERSION = '0.8'
HOOKS = {
    'KubernetesEmulator._handle': lambda: KubernetesEmulator._handle,
    'KubernetesEmulator._render_error': lambda: KubernetesEmulator._render_error,
    'KubernetesEmulator._serve_list': lambda: KubernetesEmulator._serve_list,
    'KubernetesEmulator._serve_watch': lambda: KubernetesEmulator._serve_watch,
    'KubernetesEmulator fields _requests, _buses, _lock, objects, resources': lambda: _require(
        KubernetesEmulator, '_requests', '_buses', '_lock', '_objects', '_resources'),
    'kmock._internal.dicts.patch_dict': lambda: __import__('kmock._internal.dicts', fromlist=['patch_dict']).patch_dict,
    'kmock.Request fields': lambda: _require(
        kmock.Request, 'method', 'action', 'resource', 'namespace', 'name', 'subresource', 'data', 'params',
        'headers'),
    'kmock.action.CREATE/UPDATE/FETCH': lambda: (action.CREATE, action.UPDATE, action.FETCH),
    'kmock.KubernetesObjectNotFoundError': lambda: kmock.KubernetesObjectNotFoundError,
}


def _require(cls: type, *names: str) -> None:
    missing = [n for n in names if n not in attrs.fields_dict(cls)]
    if missing:
        raise AttributeError(f'{cls.__name__} has no field {", ".join(missing)}')


def check_hooks() -> list[str]:
    """Every problem with the installed kmock, or [] when PatchedEmulator can rely on it."""
    problems = []
    version = importlib.metadata.version('kmock')
    if version != KMOCK_VERSION:
        problems.append(f'kmock {version} is installed; the launcher is written against {KMOCK_VERSION}')
    for name, probe in HOOKS.items():
        try:
            probe()
        except Exception as e:  # noqa: BLE001 - any failure means the hook is gone
            problems.append(f'kmock hook missing: {name} ({type(e).__name__}: {e})')
    return problems


def _exit_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def wait() -> None:
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)
    threading.Thread(target=wait, daemon=True).start()


async def amain(port: int, patched: bool, stdin_eof: bool, omit: list[str], audit: str | None,
                forbid: list[str], internal_error: list[str], deny_update: list[str]) -> None:
    cls = PatchedEmulator if patched else KubernetesEmulator
    kwargs: dict[str, Any] = {'audit': open(audit, 'a', encoding='utf-8')} if audit and patched else {}
    if patched:
        kwargs['forbid'] = set(forbid)
        kwargs['deny_update'] = set(deny_update)
        kwargs['internal_error'] = {k: int(n) for k, n in (u.rsplit('=', 1) for u in internal_error)}
    async with cls(**kwargs) as emu, Server(emu, host='127.0.0.1', port=port) as srv:
        for key, info in RESOURCES.items():
            if key not in omit:
                emu.resources[key] = kmock.ResourceInfo(verbs=VERBS, **info)
        print(f'READY {srv.port} {cls.__name__}', flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if stdin_eof:
            _exit_on_stdin_eof(loop, stop)
        await stop.wait()


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, default=0, help='0 picks a free port (printed in READY)')
    p.add_argument('--plain', action='store_true', help='run kmock unpatched (comparison only)')
    p.add_argument('--check-hooks', action='store_true', help='check the kmock internals and exit')
    p.add_argument('--exit-on-stdin-eof', action='store_true', help='stop when stdin closes')
    p.add_argument('--audit', metavar='FILE', help='append one JSON line per API request (user, RBAC verb, group, resource, namespace)')
    p.add_argument('--omit', action='append', default=[], metavar='RESOURCE',
                   help='do not serve this resource, e.g. crossfade.dev/v1alpha1/trafficshifts (a cluster without the CRD)')
    p.add_argument('--forbid', action='append', default=[], metavar='NAMESPACE/PLURAL',
                   help='answer 403 Forbidden to every request for that resource in that namespace, e.g. shop/leases')
    p.add_argument('--internal-error', action='append', default=[], metavar='NAMESPACE/PLURAL=N',
                   help='answer 500 to the first N requests for that resource in that namespace, e.g. shop/leases=2')
    p.add_argument('--deny-update', action='append', default=[], metavar='NAMESPACE/PLURAL/NAME',
                   help='answer 403 to every PATCH or PUT of that object, as a denying admission webhook, e.g. default/deployments/web')
    a = p.parse_args()
    bad = [u for u in a.internal_error if not re.fullmatch(r'[^/=]*/[^/=]+=[0-9]+', u)]
    if bad:
        p.error(f'--internal-error: expected NAMESPACE/PLURAL=N, got {bad}')
    found = check_hooks()
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        sys.exit(3)
    if a.check_hooks:
        print('kmock hooks ok', flush=True)
        sys.exit(0)
    unknown = [o for o in a.omit if o not in RESOURCES]
    if unknown:
        p.error(f'--omit: unknown resource(s) {unknown}; known: {sorted(RESOURCES)}')
    asyncio.run(amain(a.port, not a.plain, a.exit_on_stdin_eof, a.omit, a.audit, a.forbid, a.internal_error,
                       a.deny_update))
