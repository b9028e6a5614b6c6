#!/usr/bin/env python3
"""Packs programs into a one-layer container image (a `docker save` tarball), offline: no
registry, no daemon. The cluster suites import it with `ctr -n k8s.io images import OUT.tar`.

  mkimage.py OUT.tar NAME:TAG [--bin PROGRAM[:DEST]]... [--file SRC:DEST[:MODE]]...
             [--entrypoint JSON] [--user UID:GID]

--bin PROGRAM[:DEST] copies a dynamically linked program (to DEST, else its own path) and every
library `ldd` names, at their own paths.
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import tarfile


def library_paths(program):
    out = subprocess.run(["ldd", program], capture_output=True, text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        path = line.split("=>")[1] if "=>" in line else line
        path = path.split("(")[0].strip()
        if path.startswith("/"):
            yield path


def layer_of(entries):
    """entries: dest path -> (source path or bytes, mode). Parent folders are added."""
    folders = {"tmp"}
    for dest in entries:
        parts = dest.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for folder in sorted(folders):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        for dest in sorted(entries):
            source, mode = entries[dest]
            data = source if isinstance(source, bytes) else open(source, "rb").read()
            info = tarfile.TarInfo(dest)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("ref")
    ap.add_argument("--bin", action="append", default=[])
    ap.add_argument("--file", action="append", default=[])
    ap.add_argument("--entrypoint")
    ap.add_argument("--user")
    args = ap.parse_args()

    entries = {}
    for spec in args.bin:
        program, _, dest = spec.partition(":")
        entries[(dest or program).lstrip("/")] = (program, 0o755)
        for lib in library_paths(program):
            entries[lib.lstrip("/")] = (os.path.realpath(lib), 0o755)
    for spec in args.file:
        parts = spec.split(":")
        mode = int(parts[2], 8) if len(parts) > 2 else os.stat(parts[0]).st_mode & 0o7777
        entries[parts[1].lstrip("/")] = (parts[0], mode)
    # A non-root user needs no passwd entry to run, but tools that look one up expect it.
    entries.setdefault("etc/passwd", (b"root:x:0:0::/:/bin/false\napp:x:65532:65532::/tmp:/bin/false\n", 0o644))
    entries.setdefault("etc/group", (b"root:x:0:\napp:x:65532:\n", 0o644))

    layer = layer_of(entries)
    layer_digest = hashlib.sha256(layer).hexdigest()
    runtime = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]}
    if args.entrypoint:
        runtime["Entrypoint"] = json.loads(args.entrypoint)
    if args.user:
        runtime["User"] = args.user
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        },
        sort_keys=True,
    ).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = [
        {
            "Config": config_digest + ".json",
            "RepoTags": [args.ref],
            "Layers": [layer_digest + "/layer.tar"],
        }
    ]
    with tarfile.open(args.out, "w") as tar:
        folder = tarfile.TarInfo(layer_digest)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, data in [
            (layer_digest + "/layer.tar", layer),
            (config_digest + ".json", config),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    print(f"{args.out}: {args.ref}, {len(entries)} files, layer {len(layer)} bytes")


if __name__ == "__main__":
    main()
