"""User-defined bridge networks through the real docker CLI and docker-py: JSON and errors
compared with Debian's dockerd (a daemon of its own here, with a bridge and iptables, on
pools that cannot meet ours), isolation, live connect and disconnect, leftovers, restart."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import agent_in, start_agent
from tests.support.side_by_side import normalised
from tests.support.waiting import poll

PREFIX = "dynt"   # every network and container these tests make starts with it


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """An agent of our own: its namespaces and networks are counted before and after."""
    with agent_in(tmp_path_factory.mktemp("netagent")) as running:
        yield running


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """dockerd with its bridge and iptables on, on pools far from ours."""
    from tests.support.dockerd import Dockerd

    daemon = Dockerd(tmp_path_factory.mktemp("netdockerd"),
                     ["--default-address-pool", "base=10.213.0.0/16,size=24", "--bip", "10.214.0.1/24"])
    yield daemon
    daemon.docker("rm", "-f", *daemon.docker("ps", "-aq").stdout.split())
    daemon.docker("network", "prune", "-f")
    daemon.stop()


@pytest.fixture(scope="module")
def image(ours, reference, test_images) -> str:
    ref = test_images["busybox"]
    for engine in (ours, reference):
        pulled = engine.docker("pull", "-q", ref, timeout=120)
        assert pulled.returncode == 0, pulled.stderr
    return ref


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def cleanup(engine: Any) -> None:
    names = [n for n in engine.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
             if n.startswith(PREFIX)]
    if names:
        engine.docker("rm", "-f", *names)
    nets = [n for n in engine.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
            if n.startswith(PREFIX)]
    if nets:
        engine.docker("network", "rm", *nets)


@pytest.fixture
def both(ours, reference, image):
    yield ours, reference
    for engine in (ours, reference):
        cleanup(engine)


def shape(value: Any) -> Any:
    """The JSON's structure: keys kept, leaves replaced by their type name."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def inspect_json(engine: Any, *args: str) -> Any:
    return json.loads(ok(engine.docker(*args)))[0]


# --------------------------------------------------------------------------- JSON


def test_network_create_inspect_ls_rm_match_dockerd(both):
    results = []
    for engine in both:
        ok(engine.docker("network", "create", "--label", "tier=back", "--subnet", "10.77.0.0/24",
                         "--gateway", "10.77.0.254", "--ip-range", "10.77.0.128/25",
                         "-o", "com.docker.network.driver.mtu=1400", f"{PREFIX}-a"))
        ok(engine.docker("network", "create", "--internal", f"{PREFIX}-b"))
        a = inspect_json(engine, "network", "inspect", f"{PREFIX}-a")
        b = inspect_json(engine, "network", "inspect", f"{PREFIX}-b")
        listed = json.loads(ok(engine.docker("network", "inspect", "bridge", "host", "none")))
        ls = ok(engine.docker("network", "ls", "--filter", f"name={PREFIX}", "--filter", "label=tier=back",
                              "--format", "{{.Name}} {{.Driver}} {{.Scope}}"))
        custom = ok(engine.docker("network", "ls", "--filter", "type=custom", "--format", "{{.Name}}"))
        results.append((a, b, listed, ls, custom))
    (a, b, builtins, ls, custom), (ra, rb, rbuiltins, rls, rcustom) = results
    assert re.fullmatch(r"[0-9a-f]{64}", a["Id"]) and all(re.fullmatch(r"[0-9a-f]{64}", n["Id"]) for n in builtins)
    assert shape(a) == shape(ra)
    assert shape(b)["IPAM"] == shape(rb)["IPAM"]
    for key in ("Driver", "Scope", "Internal", "Attachable", "Labels", "Options", "Containers", "EnableIPv6"):
        assert a[key] == ra[key], key
    assert a["IPAM"] == ra["IPAM"]
    assert (b["Internal"], b["Options"], b["Labels"]) == (rb["Internal"], rb["Options"], rb["Labels"])
    assert [n["Name"] for n in builtins] == [n["Name"] for n in rbuiltins]
    assert [n["Driver"] for n in builtins] == [n["Driver"] for n in rbuiltins]
    assert ls == rls == f"{PREFIX}-a bridge local\n"
    assert sorted(custom.split()) == sorted(rcustom.split())
    for engine in both:
        ok(engine.docker("network", "rm", f"{PREFIX}-a", f"{PREFIX}-b"))
        assert f"{PREFIX}-a" not in engine.docker("network", "ls").stdout


def test_container_inspect_networks_match_dockerd(both, image):
    views = []
    for engine in both:
        ok(engine.docker("network", "create", "--subnet", "10.78.0.0/24", f"{PREFIX}-n1"))
        ok(engine.docker("network", "create", f"{PREFIX}-n2"))
        ok(engine.docker("run", "-d", "--name", f"{PREFIX}-c", "--network", f"{PREFIX}-n1",
                         "--ip", "10.78.0.9", "--network-alias", "web", image, "sleep", "300"))
        ok(engine.docker("network", "connect", "--alias", "api", f"{PREFIX}-n2", f"{PREFIX}-c"))
        assert ok(engine.docker("ps", "--filter", f"network={PREFIX}-n2", "--format", "{{.Names}}")) == f"{PREFIX}-c\n"
        c = inspect_json(engine, "inspect", f"{PREFIX}-c")
        net = inspect_json(engine, "network", "inspect", f"{PREFIX}-n1")
        ifaces = ok(engine.docker("exec", f"{PREFIX}-c", "sh", "-c", "ls /sys/class/net | sort"))
        views.append((c, net, ifaces))
    (c, net, ifaces), (rc, rnet, rifaces) = views
    nets, rnets = c["NetworkSettings"]["Networks"], rc["NetworkSettings"]["Networks"]
    assert sorted(nets) == sorted(rnets) == [f"{PREFIX}-n1", f"{PREFIX}-n2"]
    for name in nets:
        # DNSNames is API 1.45 (we speak it); the reference dockerd 20.10 speaks 1.41.
        assert sorted(set(nets[name]) - {"DNSNames"}) == sorted(rnets[name]), name
        assert (sorted(a.replace(c["Id"][:12], "<ID>") for a in nets[name]["Aliases"])
                == sorted(a.replace(rc["Id"][:12], "<ID>") for a in rnets[name]["Aliases"]))
        for key in ("IPAMConfig", "Links", "DriverOpts"):
            assert nets[name][key] == rnets[name][key], (name, key)
        assert re.fullmatch(r"[0-9a-f]{64}", nets[name]["EndpointID"])
        assert nets[name]["MacAddress"].startswith("02:42:")
        assert nets[name]["NetworkID"] == inspect_json(both[0], "network", "inspect", name)["Id"]
    assert nets[f"{PREFIX}-n1"]["IPAddress"] == rnets[f"{PREFIX}-n1"]["IPAddress"] == "10.78.0.9"
    assert nets[f"{PREFIX}-n1"]["IPPrefixLen"] == rnets[f"{PREFIX}-n1"]["IPPrefixLen"] == 24
    top = ("IPAddress", "Gateway", "MacAddress", "Bridge")
    assert {k: c["NetworkSettings"][k] for k in top} == {k: rc["NetworkSettings"][k] for k in top}
    assert ifaces == rifaces == "eth0\neth1\nlo\n"
    (cid, entry), = net["Containers"].items()
    (_, rentry), = rnet["Containers"].items()
    assert cid == c["Id"] and sorted(entry) == sorted(rentry)
    assert entry["IPv4Address"] == rentry["IPv4Address"] == "10.78.0.9/24"


def test_resolv_conf_and_hosts_match_dockerd(both, image):
    outputs = []
    for engine in both:
        ok(engine.docker("network", "create", f"{PREFIX}-dns"))
        out = ok(engine.docker("run", "--rm", "--network", f"{PREFIX}-dns", "--hostname", "h1", image,
                               "sh", "-c", "cat /etc/resolv.conf; echo ---; cat /etc/hosts"))
        out = re.sub(r"\b\d+\.\d+\.\d+\.\d+\s+h1\b", "IP\th1", out)
        # Ours names the host as Docker Desktop does; Linux dockerd has no such line.
        outputs.append(re.sub(r".*\thost\.docker\.internal\n", "", out))
    assert outputs[0] == outputs[1]
    assert "nameserver 127.0.0.11\n" in outputs[0] and "options ndots:0" in outputs[0]


def test_docker_py_networks(ours, image):
    client = ours.client()
    net = client.networks.create(f"{PREFIX}-py", labels={"k": "v"})
    try:
        assert re.fullmatch(r"[0-9a-f]{64}", net.id)
        c = client.containers.run(image, ["sleep", "300"], name=f"{PREFIX}-pyc", detach=True,
                                  network=f"{PREFIX}-py")
        net.reload()
        assert [x.name for x in net.containers] == [f"{PREFIX}-pyc"]
        other = client.networks.create(f"{PREFIX}-py2")
        other.connect(c, aliases=["second"])
        c.reload()
        assert sorted(c.attrs["NetworkSettings"]["Networks"]) == [f"{PREFIX}-py", f"{PREFIX}-py2"]
        other.disconnect(c)
        c.reload()
        assert sorted(c.attrs["NetworkSettings"]["Networks"]) == [f"{PREFIX}-py"]
        assert [n.name for n in client.networks.list(filters={"label": "k=v"})] == [f"{PREFIX}-py"]
        c.remove(force=True)
        assert sorted(client.networks.prune(filters={"label": "k=v"})["NetworksDeleted"]) == [f"{PREFIX}-py"]
        other.remove()
    finally:
        cleanup(ours)


# --------------------------------------------------------------------------- errors


def test_bad_input_answers_as_dockerd(both, image):
    cases = [
        ("network", "create", "--subnet", "10.79.0.0/24", f"{PREFIX}-e1"),
        ("network", "create", f"{PREFIX}-e1"),                                   # name taken
        ("network", "create", "--subnet", "10.79.0.128/25", f"{PREFIX}-e2"),     # overlaps
        ("network", "create", "--subnet", "10.79.1.0/24", "--gateway", "10.80.0.1", f"{PREFIX}-e3"),
        ("network", "create", "-d", "nosuchdriver", f"{PREFIX}-e4"),
        ("run", "-d", "--name", f"{PREFIX}-e", "--network", f"{PREFIX}-e1", "--network-alias", "dup",
         image, "sleep", "300"),
        ("network", "rm", f"{PREFIX}-e1"),                                       # active endpoints
        ("network", "connect", f"{PREFIX}-missing", f"{PREFIX}-e"),              # 404
        ("network", "connect", f"{PREFIX}-e1", f"{PREFIX}-e"),                   # already on it
        ("network", "disconnect", "bridge", f"{PREFIX}-nosuchcontainer"),
        ("run", "--rm", "--ip", "172.29.5.5", image, "true"),                    # default bridge
        ("run", "--rm", "--network", f"{PREFIX}-e1", "--ip", "10.81.0.5", image, "true"),
        ("run", "--rm", "--network", f"{PREFIX}-e1", "--ip", "10.79.0.1", image, "true"),  # the gateway
        ("run", "--rm", "--network", f"{PREFIX}-missing", image, "true"),
        ("network", "rm", f"{PREFIX}-missing"),
        ("network", "rm", "bridge"),
    ]
    ours, reference = both
    for args in cases:
        mine, theirs = normalised(ours.docker(*args)), normalised(reference.docker(*args))
        if args[0] == "run" and "-d" in args:
            assert mine.code == theirs.code == 0
            continue
        assert (mine.code, mine.error) == (theirs.code, theirs.error), args


def test_alias_clash_is_refused_and_shared_aliases_are_not(ours, image):
    """An alias that is another running container's name on the network is refused (dockerd 20.10
    accepts it and the name then answers with two addresses, so this one is ours alone);
    one alias on several containers stays allowed: compose gives every replica of a
    service the service's name."""
    try:
        ok(ours.docker("network", "create", f"{PREFIX}-al"))
        ok(ours.docker("run", "-d", "--name", f"{PREFIX}-al1", "--network", f"{PREFIX}-al",
                       "--network-alias", "db", image, "sleep", "300"))
        ok(ours.docker("run", "-d", "--name", f"{PREFIX}-al2", "--network", f"{PREFIX}-al",
                       "--network-alias", "db", image, "sleep", "300"))
        clash = ours.docker("run", "-d", "--name", f"{PREFIX}-al3", "--network", f"{PREFIX}-al",
                            "--network-alias", f"{PREFIX}-al1", image, "sleep", "300")
        assert clash.returncode == 125
        assert f"alias {PREFIX}-al1 is already in use in network {PREFIX}-al" in clash.stderr
        assert f"{PREFIX}-al3" not in ours.docker("ps", "--format", "{{.Names}}").stdout
        connect = ours.docker("network", "connect", "--alias", f"{PREFIX}-al2", f"{PREFIX}-al", f"{PREFIX}-al1")
        assert connect.returncode == 1 and "already" in connect.stderr
        # Refused when the endpoint goes live, not at create: Compose v2 recreates a service
        # by creating its new container aliased with the running one's name, then removing
        # the old one and renaming the new one before starting it.
        ok(ours.docker("rm", "-f", f"{PREFIX}-al3"))
        ok(ours.docker("create", "--name", f"{PREFIX}-al4", "--network", f"{PREFIX}-al",
                       "--network-alias", f"{PREFIX}-al1", image, "sleep", "300"))
        ok(ours.docker("rm", "-f", f"{PREFIX}-al1"))
        ok(ours.docker("start", f"{PREFIX}-al4"))
    finally:
        cleanup(ours)


# --------------------------------------------------------------------------- isolation


def reaches(engine: Any, container: str, ip: str) -> bool:
    return engine.docker("exec", container, "ping", "-c1", "-W1", ip).returncode == 0


def ip_on(engine: Any, container: str, network: str) -> str:
    return ok(engine.docker("inspect", "--format",
                            f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                            container)).strip()


def test_networks_are_isolated_and_connect_disconnect_work_live(ours, image):
    try:
        for n in ("a", "b"):
            ok(ours.docker("network", "create", f"{PREFIX}-iso-{n}"))
        for name, net in (("ca", "a"), ("cb", "b"), ("cab", "a")):
            ok(ours.docker("run", "-d", "--name", f"{PREFIX}-{name}", "--network", f"{PREFIX}-iso-{net}",
                           image, "sleep", "300"))
        ok(ours.docker("network", "connect", f"{PREFIX}-iso-b", f"{PREFIX}-cab"))
        ip_a = ip_on(ours, f"{PREFIX}-ca", f"{PREFIX}-iso-a")
        ip_b = ip_on(ours, f"{PREFIX}-cb", f"{PREFIX}-iso-b")
        # A container on both reaches each; the two networks do not reach each other.
        assert poll(lambda: reaches(ours, f"{PREFIX}-cab", ip_a) and reaches(ours, f"{PREFIX}-cab", ip_b),
                    timeout=10, what="both networks reached")
        assert not reaches(ours, f"{PREFIX}-ca", ip_b)
        assert not reaches(ours, f"{PREFIX}-cb", ip_a)
        # Nor through the container on both (it does not route).
        assert not reaches(ours, f"{PREFIX}-ca", ip_on(ours, f"{PREFIX}-cab", f"{PREFIX}-iso-b"))
        # Live disconnect cuts the path, live connect opens one.
        ok(ours.docker("network", "disconnect", f"{PREFIX}-iso-b", f"{PREFIX}-cab"))
        poll(lambda: not reaches(ours, f"{PREFIX}-cab", ip_b), timeout=10, what="path cut")
        assert reaches(ours, f"{PREFIX}-cab", ip_a)
        ok(ours.docker("network", "connect", f"{PREFIX}-iso-b", f"{PREFIX}-ca"))
        poll(lambda: reaches(ours, f"{PREFIX}-ca", ip_b), timeout=10, what="path opened")
    finally:
        cleanup(ours)


def test_internal_network_has_no_way_out_and_nat_works_from_others(ours, image):
    host_ip = subprocess.run(["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True,
                             text=True).stdout.split(" src ")[1].split()[0]
    try:
        ok(ours.docker("network", "create", "--internal", f"{PREFIX}-int"))
        ok(ours.docker("network", "create", f"{PREFIX}-ext"))
        routes = ok(ours.docker("run", "--rm", "--network", f"{PREFIX}-int", image, "ip", "route"))
        assert "default" not in routes
        assert ours.docker("run", "--rm", "--network", f"{PREFIX}-int", image,
                           "ping", "-c1", "-W1", host_ip).returncode != 0
        ok(ours.docker("run", "--rm", "--network", f"{PREFIX}-ext", image, "ping", "-c1", "-W2", host_ip))
    finally:
        cleanup(ours)


def test_published_port_and_container_network_mode_on_a_user_network(ours, image):
    import urllib.request

    try:
        ok(ours.docker("network", "create", f"{PREFIX}-pub"))
        ok(ours.docker("run", "-d", "--name", f"{PREFIX}-web", "--network", f"{PREFIX}-pub", "-p",
                       "127.0.0.1::8080", image, "sh", "-c",
                       "mkdir /w && echo hello > /w/index.html && httpd -f -p 8080 -h /w"))
        port = ok(ours.docker("port", f"{PREFIX}-web", "8080")).strip().rsplit(":", 1)[1]

        def fetch() -> str:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
            except OSError:
                return ""
        assert poll(fetch, timeout=15, what="published port") == "hello\n"
        mine = ok(ours.docker("exec", f"{PREFIX}-web", "ip", "-4", "-o", "addr", "show", "eth0"))
        joined = ok(ours.docker("run", "--rm", "--network", f"container:{PREFIX}-web", image,
                                "ip", "-4", "-o", "addr", "show", "eth0"))
        assert joined.split()[3] == mine.split()[3]
        assert ok(ours.docker("run", "--rm", "--network", f"container:{PREFIX}-web", image,
                              "wget", "-qO-", "http://127.0.0.1:8080/")) == "hello\n"
    finally:
        cleanup(ours)


# --------------------------------------------------------------------------- leftovers, restart


def our_traces(engine: Any, network_ids: set[str]) -> dict[str, list[str]]:
    """Bridges, host veths and iptables rules of the given networks (id12s), and the
    agent's pinned namespaces (other engines on this machine make bridges of their own)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    rules = []
    for table in ("filter", "nat"):
        rules += subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout.splitlines()
    netns_dir = Path(engine.root) / "network" / "netns"
    return {
        "bridges": sorted(b for b in re.findall(r"\d+: br-([0-9a-f]{12})", links) if b in network_ids),
        "veths": sorted(v for v, b in re.findall(r"\d+: (dy[0-9a-f]{10})@\S+ .* master br-([0-9a-f]{12})", links)
                        if b in network_ids),
        "rules": sorted(r for r in rules if any(i in r for i in network_ids)),
        "netns": sorted(p.name for p in netns_dir.iterdir()) if netns_dir.exists() else [],
    }


def test_nothing_is_left_behind(ours, image):
    before_netns = our_traces(ours, set())["netns"]
    ids: set[str] = set()
    try:
        for args in (["--subnet", "10.82.0.0/24"], ["--internal"]):
            ids.add(ok(ours.docker("network", "create", *args, f"{PREFIX}-l{len(ids)}")).strip()[:12])
        ok(ours.docker("run", "-d", "--name", f"{PREFIX}-lc", "--network", f"{PREFIX}-l0", image, "sleep", "300"))
        ok(ours.docker("network", "connect", f"{PREFIX}-l1", f"{PREFIX}-lc"))
        during = our_traces(ours, ids)
        assert len(during["bridges"]) == 2 and len(during["veths"]) == 2
        assert len(during["rules"]) >= 8
        assert len(during["netns"]) == len(before_netns) + 1
        # Refused requests leave nothing either.
        refused = [ours.docker("network", "create", "--subnet", "10.83.0.0/24",
                               "-o", "com.docker.network.bridge.nosuch=1", f"{PREFIX}-bad"),
                   ours.docker("network", "create", "--subnet", "10.82.0.0/25", f"{PREFIX}-bad"),
                   ours.docker("network", "rm", f"{PREFIX}-l0"),
                   ours.docker("network", "connect", "--ip", "10.99.0.9", f"{PREFIX}-l0", f"{PREFIX}-lc")]
        assert all(r.returncode != 0 for r in refused), [r.stderr for r in refused]
        assert our_traces(ours, ids) == during
    finally:
        cleanup(ours)
    after = our_traces(ours, ids)
    assert after == {"bridges": [], "veths": [], "rules": [], "netns": before_netns}
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not [v for v in during["veths"] if v in links]


def test_networks_survive_an_agent_restart(tmp_path, image, test_images):
    agent = start_agent(socket=tmp_path / "docker.sock", root=tmp_path / "root")
    try:
        ok(agent.docker("pull", "-q", image))
        ok(agent.docker("network", "create", "--label", "keep=1", f"{PREFIX}-keep"))
        before = ok(agent.docker("network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}"))
        agent.stop()
        agent = start_agent(socket=tmp_path / "docker.sock", root=tmp_path / "root")
        assert ok(agent.docker("network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}")) == before
        ip = ok(agent.docker("run", "--rm", "--network", f"{PREFIX}-keep", image, "ip", "-4", "-o", "addr",
                             "show", "eth0"))
        subnet = inspect_json(agent, "network", "inspect", f"{PREFIX}-keep")["IPAM"]["Config"][0]["Subnet"]
        import ipaddress
        assert ipaddress.ip_address(ip.split()[3].split("/")[0]) in ipaddress.ip_network(subnet)
    finally:
        cleanup(agent)
        agent.stop()


def test_icc_false_separates_containers_of_one_network(ours, image):
    try:
        for name, icc in (("icc-off", "false"), ("icc-on", "true")):
            ok(ours.docker("network", "create", "-o", f"com.docker.network.bridge.enable_icc={icc}",
                           f"{PREFIX}-{name}"))
            for c in ("x", "y"):
                ok(ours.docker("run", "-d", "--name", f"{PREFIX}-{name}-{c}", "--network", f"{PREFIX}-{name}",
                               image, "sleep", "300"))
        on_ip = ip_on(ours, f"{PREFIX}-icc-on-y", f"{PREFIX}-icc-on")
        assert poll(lambda: reaches(ours, f"{PREFIX}-icc-on-x", on_ip), timeout=10, what="icc on")
        assert not reaches(ours, f"{PREFIX}-icc-off-x", ip_on(ours, f"{PREFIX}-icc-off-y", f"{PREFIX}-icc-off"))
        refused = ours.docker("network", "create", "-o", "com.docker.network.bridge.host_binding_ipv4=1.2.3.4",
                              f"{PREFIX}-refused")
        assert refused.returncode == 1
        assert "com.docker.network.bridge.host_binding_ipv4" in refused.stderr
    finally:
        cleanup(ours)
