#!/usr/bin/env python3
"""Vendor the part of DigitalOcean's OpenAPI description that brine uses.

Usage: vendor.py SPEC_DIR OUT_DIR
  SPEC_DIR is the specification/ directory of a checkout of github.com/digitalocean/openapi;
  OUT_DIR receives DigitalOcean-public.v2.yaml with only the paths below, and every file those
  paths reference (transitively), at the same relative paths, unchanged.
"""
import os
import shutil
import sys

import yaml

# The endpoints brine's cloud package (and brine cloud sim's domain helper) call.
PATHS = {
    "/v2/droplets": ["get", "post", "delete"],
    "/v2/droplets/{droplet_id}": ["get", "delete"],
    "/v2/droplets/{droplet_id}/actions": ["get"],
    "/v2/actions": ["get"],
    "/v2/actions/{action_id}": ["get"],
    "/v2/regions": ["get"],
    "/v2/sizes": ["get"],
    "/v2/images/{image_id}": ["get"],
    "/v2/domains": ["post"],
    "/v2/domains/{domain_name}/records": ["get", "post"],
    "/v2/domains/{domain_name}/records/{domain_record_id}": ["get", "put", "patch", "delete"],
}
ROOT = "DigitalOcean-public.v2.yaml"


def refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "x-codeSamples":
                continue  # code samples in four languages, not part of the API
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def rebase(node, base):
    """Rewrites the file part of every $ref in node, relative to base, to be relative to the root."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and not v.startswith("#"):
                target, _, frag = v.partition("#")
                v = os.path.normpath(os.path.join(base, target)) + ("#" + frag if frag else "")
            if k == "discriminator" and isinstance(v, dict) and isinstance(v.get("mapping"), dict):
                v = dict(v, mapping={n: rebase({"$ref": r}, base)["$ref"] for n, r in v["mapping"].items()})
            out[k] = rebase(v, base)
        return out
    if isinstance(node, list):
        return [rebase(v, base) for v in node]
    return node


def main(spec, out):
    with open(os.path.join(spec, ROOT)) as f:
        root = yaml.safe_load(f)
    paths = {}
    for p, methods in PATHS.items():
        item = {}
        for m in methods:
            op = root["paths"][p][m]
            # The published root refers to each operation's file ($ref where OpenAPI 3.0 wants
            # an operation object); inline the operation, its refs made relative to the root.
            if set(op) == {"$ref"}:
                opfile = op["$ref"]
                with open(os.path.join(spec, opfile)) as f:
                    op = rebase(yaml.safe_load(f), os.path.dirname(opfile))
            item[m] = op
        paths[p] = item
    root["paths"] = paths
    for k in ("tags", "x-tagGroups"):
        root.pop(k, None)
    todo = [(ROOT, root)]
    seen = set()
    while todo:
        name, doc = todo.pop()
        for r in refs(doc):
            target = r.split("#", 1)[0]
            if not target:
                continue
            rel = os.path.normpath(os.path.join(os.path.dirname(name), target))
            if rel in seen:
                continue
            seen.add(rel)
            with open(os.path.join(spec, rel)) as f:
                todo.append((rel, yaml.safe_load(f)))
    for name in sorted(seen):
        dst = os.path.join(out, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(spec, name), dst)
    with open(os.path.join(out, ROOT), "w") as f:
        f.write("# Trimmed by vendor.py: only the paths brine uses; everything else as published.\n")
        yaml.safe_dump(root, f, sort_keys=False, allow_unicode=True)
    print(f"{len(seen)} files")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
