#!/usr/bin/env python3
"""The kernel's layers, checked (issue 15; docs/architecture.md "Layers").

Reads the kernel's compiled objects (the static library meson builds, libmbkernel.a) with
`nm`: each object's defined functions say which file owns a name, its undefined ones which
names it calls. A call from a file to a function defined in a file of a HIGHER layer fails
the check, with both files and the function named. Calls within one layer and calls down
are fine; so is a lower file calling a function pointer a higher one registered (a callback
leaves no symbol). A kernel file missing from LAYERS fails too: every new file gets a place.

Usage: layers.py <libmbkernel.a> [--list]   (--list prints every cross-file call, for docs)
"""
import subprocess
import sys

# Lowest first. Keep in step with docs/architecture.md "Layers".
LAYERS = [
    ("base", ["log.c", "err.c", "util.c", "jsonw.c", "cfg.c", "loop.c", "chunker.c", "sniff.c", "fileio.c", "names.c", "xff.c", "metrics.c",
              "modref.c", "registry.c", "secret.c", "etcd.c"]),
    ("db", ["db.c", "db_sync.c", "db_repl.c", "auth_users.c"]),
    ("bus", ["hook.c", "task.c", "timer.c", "pool.c", "cluster.c", "cluster_kv.c"]),
    ("blob", ["blob.c", "blob_cache.c", "blob_pending.c", "backend.c", "backend_set.c", "piece.c", "crypt.c"]),
    ("txn", ["txn.c", "gc.c"]),
    ("namespace", ["ns.c"]),
    ("files", ["fs.c", "fs_big.c", "fs_write.c", "fs_read.c", "fsck.c", "history.c", "stores.c", "ctype.c", "backup.c", "bulk.c", "migrate.c",
               "format.c"]),
    ("doors", ["http.c", "http_route.c", "http_target.c", "http_reply.c", "http_sse.c", "http_server.c", "conn.c", "throttle.c", "auth.c", "files_http.c", "tus.c", "zip.c", "task_http.c",
               "notify.c", "luas.c", "api.c", "evapi.c", "modmgr.c", "modmgr_cluster.c", "reload.c",
               "accesslog.c", "apppass.c", "health.c", "listdeco.c", "metrics_http.c", "secret_http.c", "modsvc.c", "backend_http.c", "cluster_http.c", "cluster_fwd.c", "cluster_ops.c", "cluster_repl.c", "cluster_place.c", "cluster_replica.c", "cluster_gc.c", "cluster_events.c"]),
]

# Calls that cross a layer upward, each with its reason, for a change in flight. Empty: every
# upward call fails the test (issue 15 removed the last ones). A new entry needs the lead's word.
PENDING = {}


def file_of(member):
    # meson names archive members "kernel_<file>.c.o"
    name = member.rsplit("/", 1)[-1]
    if name.startswith("kernel_"):
        name = name[len("kernel_"):]
    return name[:-2] if name.endswith(".o") else name


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    lib = sys.argv[1]
    out = subprocess.run(["nm", "-A", lib], check=True, capture_output=True, text=True).stdout
    defined, undefined = {}, {}
    for line in out.splitlines():
        # "lib.a:kernel_fs.c.o:0000000000000120 T fs_stat" or "lib.a:kernel_fs.c.o:                 U db_get"
        head, _, rest = line.rpartition(":")
        member = head.rsplit(":", 1)[-1]
        parts = rest.split()
        if len(parts) < 2:
            continue
        kind, sym = parts[-2], parts[-1]
        f = file_of(member)
        if kind in ("T", "D", "B", "R"):
            defined[sym] = f
        elif kind == "U":
            undefined.setdefault(f, set()).add(sym)
    layer = {}
    for i, (_, files) in enumerate(LAYERS):
        for f in files:
            layer[f] = i
    bad, unknown, calls = [], sorted(set(defined.values()) - set(layer)), []
    for f, syms in sorted(undefined.items()):
        for s in sorted(syms):
            g = defined.get(s)
            if not g or g == f:
                continue
            calls.append((f, g, s))
            if f in layer and g in layer and layer[g] > layer[f] and (f, s) not in PENDING:
                bad.append((f, g, s))
    if "--list" in sys.argv:
        for f, g, s in calls:
            print(f"{f} -> {g}: {s}")
    for f in unknown:
        print(f"FAIL: kernel/{f} has no layer: add it to LAYERS here and to docs/architecture.md")
    for f, g, s in bad:
        print(f"FAIL: kernel/{f} ({LAYERS[layer[f]][0]}) calls {s} in kernel/{g} ({LAYERS[layer[g]][0]}), "
              "a higher layer: pass a callback or move it down")
    for (f, s), why in sorted(PENDING.items()):
        if (f, defined.get(s), s) in calls:
            print(f"pending: kernel/{f} calls {s}: {why}")
        else:
            print(f"FAIL: kernel/{f} no longer calls {s}: remove it from PENDING")
            bad.append((f, defined.get(s), s))
    print(f"{len(calls)} cross-file calls, {len(bad)} upward, {len(unknown)} files without a layer")
    return 1 if bad or unknown else 0


if __name__ == "__main__":
    sys.exit(main())
