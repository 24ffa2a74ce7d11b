#!/usr/bin/env python3
"""Pack a root filesystem into a one-layer image tar in docker-archive format (what `docker save`
writes, and what `ctr images import` and `docker load` read), without a daemon or a registry.

usage: image-tar.py ROOT REF OUT.tar --entrypoint JSON [--user U] [--expose PORT/tcp]...

The layer is reproducible: entries sorted, owned by root, dated 0.
"""

import argparse
import hashlib
import io
import json
import os
import tarfile


def layer_of(root):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for top, dirs, files in os.walk(root):
            dirs.sort()
            for name in dirs + sorted(files):
                path = os.path.join(top, name)
                info = layer.gettarinfo(path, arcname=os.path.relpath(path, root))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        layer.addfile(info, f)
                else:
                    layer.addfile(info)
    return out.getvalue()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("ref")
    parser.add_argument("out")
    parser.add_argument("--entrypoint", required=True)
    parser.add_argument("--user")
    parser.add_argument("--expose", action="append", default=[])
    args = parser.parse_args()
    layer = layer_of(args.root)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "Entrypoint": json.loads(args.entrypoint),
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "WorkingDir": "/",
    }
    if args.user:
        config["User"] = args.user
    if args.expose:
        config["ExposedPorts"] = {port: {} for port in args.expose}
    image = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "image-tar.py"}],
        "created": "1970-01-01T00:00:00Z",
    }
    image_json = json.dumps(image, sort_keys=True).encode()
    config_name = hashlib.sha256(image_json).hexdigest() + ".json"
    layer_name = diff_id[len("sha256:"):] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [args.ref], "Layers": [layer_name]}]
    with tarfile.open(args.out, "w") as archive:
        for name, data in (
            (config_name, image_json),
            (layer_name, layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
