"""The fleet section of scripts/bench: enc with N nodes whose facts are of real size.

    bench-fleet.py groups <url> <admin token>
        an environment, a root group `fleet` (every Debian node, in production/eu) and 200
        rule groups below it over 10 fact paths; prints a `classify` token for the agent runs
    bench-fleet.py measure <url> <admin token> <nodes> <enc pid> <tools> <classify token>
            <facts.json> [dynamodb]
        group writes (the root's, judging every node, and a leaf's) and their dry runs, a
        lookup's first page, an agent run whose rule view did not change, a classification's
        median latency: each with the store calls and bytes read (enc's own counters), and
        enc's peak RSS through it all and at rest after; on DynamoDB, the root group's write
        extrapolated to 100,000 nodes (reads, time, cost)

Figures are printed one per line; `target ...: met` or `MISSED` after those with a target.
"""
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse

PATHS = ["os.family", "os.release.major", "processors.count", "memory.system.total_bytes",
         "networking.domain", "virtual", "kernelrelease", "role", "datacenter", "team"]


def connect(url):
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)


def call(connection, token, method, path, body=None, ok=(200, 201, 204)):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    connection.request(method, path, body, headers)
    response = connection.getresponse()
    answer = response.read()
    assert response.status in ok, (method, path, response.status, answer[:500])
    headers = dict(response.getheaders())
    return (json.loads(answer) if answer else None), headers


def rule(i):
    """Group i's rule: two of the ten paths, so that every path is read by some rule."""
    if i < 100:
        return ["and", ["=", ["fact", "role"], f"r{i % 20}"], ["=", ["fact", "datacenter"], f"dc{i // 20}"]]
    kinds = [
        ["=", ["fact", "team"], f"t{i % 7}"],
        ["=", ["fact", "os", "release", "major"], "12" if i % 2 else "11"],
        [">=", ["fact", "processors", "count"], str(2 + i % 8)],
        [">=", ["fact", "memory", "system", "total_bytes"], str((2 + i % 4) << 30)],
        ["=", ["fact", "networking", "domain"], f"d{i % 5}.example.com"],
        ["=", ["fact", "virtual"], ["kvm", "physical", "xen"][i % 3]],
        ["~", ["fact", "kernelrelease"], f"-{20 + i % 6}-"],
    ]
    return ["and", ["=", ["fact", "role"], f"r{i % 20}"], kinds[i % len(kinds)]]


def groups(url, admin):
    c = connect(url)
    call(c, admin, "POST", "/environment/", {"environment_name": "production", "puppet_cluster_name": "eu"})
    call(c, admin, "POST", "/nodegroup/", {"name": "fleet", "environment_name": "production",
         "puppet_cluster_name": "eu", "rule": ["=", ["fact", "os", "family"], "Debian"],
         "classes": {"profile::base": {"tier": "a"}}})
    for i in range(200):
        call(c, admin, "POST", "/nodegroup/", {"name": f"g{i:03}", "parent": "fleet",
             "rule": rule(i), "classes": {f"profile::g{i:03}": {}}})
    paths, _ = call(c, admin, "GET", "/rule-views")
    read = sorted(p.removeprefix("facts.") for p in paths["paths"])
    assert read == sorted(PATHS), read
    token, _ = call(c, admin, "POST", "/tokens", {"name": "fleet-agents", "scopes": ["classify"]})
    print(token["token"])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


class Peak(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)


def counters(c, admin):
    c.request("GET", "/metrics", headers={"Authorization": f"Bearer {admin}"})
    text = c.getresponse().read().decode()
    calls, read = {}, {}
    for line in text.splitlines():
        found = re.match(r'store_operation_duration_seconds_count\{.*operation="(\w+)".*\} (\S+)', line)
        if found:
            calls[found.group(1)] = calls.get(found.group(1), 0) + float(found.group(2))
        found = re.match(r'store_read_bytes_total\{.*operation="(\w+)",record="(\w+)"\} (\S+)', line)
        if found:
            key = f"{found.group(1)} {found.group(2)}"
            read[key] = read.get(key, 0) + float(found.group(3))
    return calls, read


def delta(before, after):
    keys = set(before) | set(after)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)}


def verdict(ok, target):
    return f"target {target}: {'met' if ok else 'MISSED'}"


def measure(url, admin, nodes, pid, tools, agent_token, dynamodb):
    c = connect(url)

    def timing(ok, target):
        """Targets of time and memory are the embedded store's; on DynamoDB Local, figures."""
        return "" if dynamodb else verdict(ok, target)

    deadline = time.time() + 3600
    while True:
        status, _ = call(c, admin, "GET", "/rule-views")
        if status["current"]:
            break
        assert time.time() < deadline, status
        time.sleep(1)
    peak = Peak(pid)
    peak.start()
    last_read = {}

    def timed(what, method, path, body=None, runs=3):
        """The median of `runs`, with the store calls and bytes read of one."""
        times, answer, headers = [], None, None
        for run in range(runs):
            calls0, read0 = counters(c, admin)
            start = time.perf_counter()
            answer, headers = call(c, admin, method, path, body(run) if callable(body) else body)
            times.append(time.perf_counter() - start)
            calls1, read1 = counters(c, admin)
        times.sort()
        calls, read = delta(calls0, calls1), delta(read0, read1)
        last_read.clear()
        last_read.update(read)
        total = sum(read.values())
        median = times[len(times) // 2]
        print(f"{what}: median {median * 1000:.0f} ms of {runs}; store calls "
              f"{json.dumps({k: int(v) for k, v in sorted(calls.items())})}; read {total / 1048576:.1f} MiB "
              f"({total / max(nodes, 1):.0f} B per node of the fleet) "
              f"{json.dumps({k: int(v) for k, v in sorted(read.items())})}")
        return median, answer, headers, total

    root = lambda run: {"environment_name": "production", "puppet_cluster_name": "eu",
                        "rule": ["=", ["fact", "os", "family"], "Debian"],
                        "classes": {"profile::base": {"tier": f"b{run}"}}}
    leaf = lambda run: {"parent": "fleet", "rule": rule(0), "classes": {"profile::g000": {"n": run}}}
    took, answer, _, read = timed("dry run of the root group's write (judges every node)", "PUT",
                                  "/nodegroup/fleet?dry_run=true", root)
    scanned = last_read["scan node"] if "scan node" in last_read else 0
    assert answer["examined"] == nodes, answer["examined"]
    assert not answer.get("provisional"), "views were taken"
    print(f"  examined {answer['examined']}, affected {answer['affected']}; "
          f"{read / nodes:.0f} B read per node examined; {timing(took < 2, '< 2 s')}")
    per_node = read / nodes
    took, _, _, _ = timed("the root group's write with its judgement", "PUT", "/nodegroup/fleet", root)
    print(f"  {timing(took < 2, '< 2 s')}")
    root_write = took
    took, answer, _, _ = timed("dry run of a leaf group's write (g000)", "PUT",
                               "/nodegroup/g000?dry_run=true", leaf)
    print(f"  examined {answer['examined']}; {timing(took < 2, '< 2 s')}")
    took, _, _, _ = timed("a leaf group's write with its judgement (g000)", "PUT", "/nodegroup/g000", leaf)
    print(f"  {timing(took < 2, '< 2 s')}")
    took, answer, headers, _ = timed("first page of GET /nodegroup/g000/nodes (1 node in 200 is a member)",
                                     "GET", "/nodegroup/g000/nodes", runs=5)
    assert "enc-provisional" not in {k.lower() for k in headers}
    print(f"  {len(answer['items'])} members on it (a page judges at most ENC_LOOKUP_JUDGED nodes, "
          f"then says where the next starts: {answer.get('next_cursor')}); {timing(took < 0.1, '< 100 ms')}")
    # Every member of the sparse group, following the cursors: the fleet judged once in all.
    start, pages, members, cursor = time.perf_counter(), 0, 0, None
    while True:
        page, _ = call(c, admin, "GET", "/nodegroup/g000/nodes" + (f"?cursor={urllib.parse.quote(cursor)}" if cursor else ""))
        pages, members, cursor = pages + 1, members + len(page["items"]), page.get("next_cursor")
        if not cursor:
            break
    print(f"every member of g000 by its cursors: {members} members, {pages} pages, "
          f"{(time.perf_counter() - start) * 1000:.0f} ms")
    took, answer, _, _ = timed("first page of GET /nodegroup/fleet/nodes", "GET", "/nodegroup/fleet/nodes", runs=5)
    print(f"  {timing(took < 0.1, '< 100 ms')}")

    # An agent run whose facts changed nothing rules read (the same node's facts again). The
    # first of two records its token's use (at most once a minute per token, not per run).
    agent_run = [tools, "fleet", url, f"Authorization: Bearer {agent_token}", "5", "1", "1",
                 sys.argv[8], "20480"]
    used = lambda: call(c, admin, "GET", "/tokens/fleet-agents")[0].get("last_used_at")
    before = used()
    subprocess.run(agent_run, check=True, stdout=subprocess.DEVNULL)
    # A use more than a minute after the last is written in the background after the answer:
    # let it land (on DynamoDB Local it can come after the next run has begun and be counted
    # as that run's write). A use within the minute writes nothing, and nothing lands.
    deadline = time.time() + 5
    while used() == before and time.time() < deadline:
        time.sleep(0.1)
    calls0, _ = counters(c, admin)
    subprocess.run(agent_run, check=True, stdout=subprocess.DEVNULL)
    calls1, _ = counters(c, admin)
    calls = delta(calls0, calls1)
    reads, writes = calls.get("get", 0), calls.get("commit", 0)
    print(f"an agent run whose rule view did not change: {int(reads)} read(s), {int(writes)} write(s); "
          f"{verdict(reads == 1 and writes == 0, 'one read, zero writes')}")

    out = subprocess.run([tools, "latency", f"{url}/nodes/n000005/classification?format=yaml", "2000",
                          f"Authorization: Bearer {admin}"], check=True, capture_output=True, text=True).stdout
    p50 = float(re.search(r"p50 ([0-9.]+) ms", out).group(1))
    print(f"classification: {out.strip()}; {timing(p50 < 1, 'p50 < 1 ms')}")

    peak.running = False
    peak.join()
    print(f"peak RSS through all of it: {peak.peak // 1024} MiB; {timing(peak.peak <= 256 * 1024, '<= 256 MiB')}")
    time.sleep(5)
    idle = rss_kib(pid)
    print(f"RSS at rest after: {idle // 1024} MiB; {timing(idle <= 128 * 1024, '<= 128 MiB')}")
    print(f"bytes read per node examined by a judgement: {per_node:.0f}; {verdict(per_node <= 1024, '<= 1 KiB')}")
    if dynamodb:
        # A consistent Scan costs a read request unit per 4 KB it reads; BatchGetItem one per
        # item (up to 4 KB) read consistently. On-demand: USD 0.125 per million (us-east-1).
        fleet = 100_000
        units = scanned / nodes * fleet / 4096 + fleet
        print(f"extrapolated to {fleet:,} nodes on DynamoDB, a group write's judgement: reads "
              f"{per_node * fleet / 1048576:.0f} MiB in about {fleet / 200:.0f} BatchGetItem and "
              f"{scanned / nodes * fleet / 1048576:.0f} Scan pages, {units:,.0f} read request units "
              f"(USD {units * 0.125 / 1e6:.4f}), {root_write * fleet / nodes:.0f} s at this run's pace")


if __name__ == "__main__":
    if sys.argv[1] == "groups":
        groups(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "measure":
        measure(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7],
                sys.argv[9:] == ["dynamodb"])
    else:
        sys.exit(__doc__)
