"""The official Python `kubernetes` client against `cluster server`: list, create, watch.

Usage: python3 client_smoke.py KUBECONFIG. Prints OK and exits 0 when everything worked.
"""
import sys
import threading

from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()

names = [n.metadata.name for n in v1.list_namespace().items]
assert "kube-system" in names, names

seen = []
ready = threading.Event()


def watcher():
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, "default", label_selector="app=py", timeout_seconds=30):
        ready.set()
        seen.append((ev["type"], ev["object"].metadata.name))
        if ("DELETED", "from-python") in seen:
            w.stop()


cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="from-python", labels={"app": "py"}), data={"a": "b"})
v1.create_namespaced_config_map("default", cm)
t = threading.Thread(target=watcher)
t.start()
ready.wait(30)
got = v1.read_namespaced_config_map("from-python", "default")
assert got.data == {"a": "b"}, got.data
v1.patch_namespaced_config_map("from-python", "default", {"data": {"a": "c"}})
v1.delete_namespaced_config_map("from-python", "default")
t.join(30)
assert seen[0] == ("ADDED", "from-python"), seen
assert ("MODIFIED", "from-python") in seen and ("DELETED", "from-python") in seen, seen
try:
    v1.read_namespaced_config_map("from-python", "default")
    raise SystemExit("still there after delete")
except client.exceptions.ApiException as e:
    assert e.status == 404, e.status
print("OK")
