"""A small kustomize for the subset deploy/k8s uses, so that `podman kube
play` gets the rendered manifests on a machine without kubectl (Debian 12
ships none with kustomize v3+).

Supported: `resources` (files, and folders holding a kustomization.yaml),
`configMapGenerator` (name, files as "path" or "key=path", behavior
create/merge/replace), `generatorOptions.disableNameSuffixHash: true`, and
`patches` given by path (strategic merge: maps merge, a null deletes a key,
lists of maps merge by "name"). Anything else is an error, never ignored:
`scripts/container test` also compares this output with `kubectl
kustomize` where kubectl is installed.

    python3 tests/container/kustomize.py deploy/k8s/overlays/podman
"""
import os
import sys

import yaml

KNOWN = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions", "patches"}


def _load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _merge(base, patch):
    """Strategic merge, the part of it these manifests need."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _merge(out[k], v)
            else:
                out[k] = v
        return out
    if (isinstance(base, list) and isinstance(patch, list) and
            all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = list(base)
        for item in patch:
            for i, old in enumerate(out):
                if old["name"] == item["name"]:
                    out[i] = _merge(old, item)
                    break
            else:
                out.append(item)
        return out
    return patch


def _configmap(gen, root):
    data = {}
    for spec in gen.get("files", []):
        key, _, path = spec.rpartition("=")
        key = key or os.path.basename(path)
        with open(os.path.join(root, path)) as f:
            data[key] = f.read()
    unknown = set(gen) - {"name", "files", "behavior"}
    if unknown:
        raise ValueError("configMapGenerator %s: unsupported %s" % (gen["name"], sorted(unknown)))
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}


def render(root):
    """The documents of the kustomization in folder root."""
    path = os.path.join(root, "kustomization.yaml")
    k = _load_all(path)[0]
    unknown = set(k) - KNOWN
    if unknown:
        raise ValueError("%s: unsupported fields %s" % (path, sorted(unknown)))
    docs = []
    for res in k.get("resources", []):
        p = os.path.join(root, res)
        docs.extend(render(p) if os.path.isdir(p) else _load_all(p))
    gens = k.get("configMapGenerator", [])
    if gens and not (k.get("generatorOptions") or {}).get("disableNameSuffixHash"):
        raise ValueError("%s: name hashes are not supported (disableNameSuffixHash: true)" % path)
    for gen in gens:
        cm = _configmap(gen, root)
        behavior = gen.get("behavior", "create")
        found = [i for i, d in enumerate(docs) if d["kind"] == "ConfigMap" and
                 d["metadata"]["name"] == gen["name"]]
        if behavior == "create":
            if found:
                raise ValueError("ConfigMap %s generated twice" % gen["name"])
            docs.append(cm)
        elif behavior in ("merge", "replace") and found:
            old = docs[found[0]]
            data = dict(old.get("data", {})) if behavior == "merge" else {}
            data.update(cm["data"])
            docs[found[0]] = dict(old, data=data)
        else:
            raise ValueError("ConfigMap %s: behavior %s with nothing to merge" % (gen["name"], behavior))
    for p in k.get("patches", []):
        if set(p) != {"path"}:
            raise ValueError("%s: only patches by path are supported" % path)
        for patch in _load_all(os.path.join(root, p["path"])):
            hits = [i for i, d in enumerate(docs) if d["kind"] == patch["kind"] and
                    d["metadata"]["name"] == patch["metadata"]["name"]]
            if len(hits) != 1:
                raise ValueError("patch %s: no single %s/%s" % (p["path"], patch["kind"],
                                                                 patch["metadata"]["name"]))
            docs[hits[0]] = _merge(docs[hits[0]], patch)
    return docs


def normalized(docs):
    """Order-free form for comparing two renderings (lists of named maps by name)."""
    def norm(x):
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items()}
        if isinstance(x, list):
            items = [norm(v) for v in x]
            if all(isinstance(v, dict) and "name" in v for v in items):
                items.sort(key=lambda v: v["name"])
            return items
        return x
    return sorted((norm(d) for d in docs), key=lambda d: (d["kind"], d["metadata"]["name"]))


if __name__ == "__main__":
    yaml.safe_dump_all(render(sys.argv[1]), sys.stdout, sort_keys=False)
