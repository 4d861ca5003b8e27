package scenarios

import (
	"strings"
	"testing"
)

// doc trims the leading newline of a raw-string YAML document, so that line
// 1 of the file is the line after the opening backquote.
func doc(s string) string { return strings.TrimPrefix(s, "\n") }

type brokenCase struct {
	name string
	yaml string
	want []string // every error, in order, as printed
}

var brokenCases = []brokenCase{
	{
		name: "tcp within given twice",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
expect:
  - {name: e1, tcp: {from: h1/c1, to: h2/c1, port: 80, within: 3s}, at: 1s, within: 5s}
  - {name: e2, tcp: {from: h1/c1, to: h2/c1, port: 80, within: 3s}, during: {from: 1s, to: 2s}}
`),
		want: []string{
			`s.yaml:4:64: expect "e1": within is given twice (in tcp and in the expectation): give one`,
			`s.yaml:5:64: expect "e2": within applies to point checks, not to a during window`,
		},
	},
	{
		name: "unknown top-level field",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
hostz: 3
`),
		want: []string{`s.yaml:3:1: unknown field "hostz" in scenario (allowed: apiVersion, name, lab, seed, description, network, networks, underlay, etcd, hosts, timeline, expect, artifacts, runtime)`},
	},
	{
		name: "unknown nested field",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network:
  netwrk: 10.10.0.0/16
`),
		want: []string{`s.yaml:4:3: unknown field "netwrk" in network (allowed: network, subnetLen, mtu, backend)`},
	},
	{
		name: "unknown field in a list entry",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
hosts:
  - containers: 1
    count: 2
`),
		want: []string{`s.yaml:5:5: unknown field "count" in hosts (allowed: containers, agentArgs, link, agent)`},
	},
	{
		name: "unknown field in a step",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
timeline:
  - at: 1s
    action: etcd-stop
    hots: h1
`),
		want: []string{`s.yaml:6:5: unknown field "hots" in timeline (allowed: name, at, after, delay, action, host, signal, percent, rate, containers, agentArgs, config, member, wait, jitter, loss, reorder, duplicate, corrupt, direction, match, seed, mtu, keepConfig, dev, tx-checksum, tso, gro, binary, network)`},
	},
	{
		name: "bad network CIDR",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network:
  network: 10.10.0.0/33
`),
		want: []string{`s.yaml:4:12: network "10.10.0.0/33": not a CIDR prefix (want e.g. "10.10.0.0/16")`},
	},
	{
		name: "bad underlay CIDR (a trailing empty document is fine)",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
underlay:
  cidr: 192.168.77.0/29
---
`),
		want: []string{`s.yaml:4:9: underlay cidr 192.168.77.0/29: too small for a host and etcd (use a /28 or larger; host i is its i-th address, etcd the top 6)`},
	},
	{
		name: "underlay not a prefix",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
underlay: {cidr: 192.168.77.0}
`),
		want: []string{`s.yaml:3:18: underlay cidr "192.168.77.0": not an IPv4 CIDR prefix (want e.g. 192.168.77.0/24)`},
	},
	{
		name: "config errors land on their field",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network:
  network: 10.10.0.0/16
  subnetLen: 31
`),
		want: []string{`s.yaml:5:14: subnetLen 31: must be at most 30`},
	},
	{
		name: "an MTU flannel would refuse",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network:
  network: 10.10.0.0/16
  mtu: 50
`),
		want: []string{`s.yaml:5:8: mtu 50: must be 0 (derive from the interface) or 68..65535`},
	},
	{
		name: "unknown backend",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network:
  backend: geneve
`),
		want: []string{`s.yaml:4:12: backend "geneve": unknown backend (supported: udp, vxlan, host-gw)`},
	},
	{
		name: "backend port out of range",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network:
  backend: {type: vxlan, port: 70000}
`),
		want: []string{`s.yaml:4:32: backend port 70000: must be 1..65535`},
	},
	{
		name: "wrong YAML types",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
seed: abc
hosts:
  count: [1]
  containers: 2
network: 5
etcd:
  embedded: "yes"
`),
		want: []string{
			`s.yaml:3:7: seed: want an integer, got "abc"`,
			`s.yaml:5:10: count: want an integer, got a sequence`,
			`s.yaml:7:10: network: want a mapping, got 5`,
			`s.yaml:9:13: embedded: want true or false, got "yes"`,
		},
	},
	{
		name: "unquoted JSON for config-set",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
timeline:
  - at: 1s
    action: config-set
    config: {"Network": "x"}
`),
		want: []string{`s.yaml:6:13: config: want a string (quote the JSON: config: '{"Network": ...}'), got a mapping`},
	},
	{
		name: "step names an unknown host",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
timeline:
  - name: kill-h9
    at: 1s
    action: agent-kill
    host: h9
`),
		want: []string{`s.yaml:7:11: step "kill-h9": unknown host "h9" (hosts: h1..h3)`},
	},
	{
		name: "host added by host-add, used before and after; removed host",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
hosts: {count: 2}
timeline:
  - name: early
    at: 1s
    action: agent-kill
    host: h3
  - name: add
    at: 2s
    action: host-add
  - name: late
    after: add
    action: agent-kill
    host: h3
  - name: rm
    at: 5s
    action: host-remove
    host: h1
  - name: again
    at: 6s
    action: link-down
    host: h1
`),
		want: []string{
			`s.yaml:8:11: step "early": unknown host "h3" (hosts: h1, h2; h3 is added later, by step "add")`,
			`s.yaml:23:11: step "again": unknown host "h1" (hosts: h2, h3; h1 was removed by step "rm")`,
		},
	},
	{
		name: "after: unknown step, cycle, self, duplicate name",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
timeline:
  - name: a
    after: b
    action: etcd-stop
  - name: b
    after: a
    action: etcd-start
  - name: c
    after: nope
    action: etcd-start
  - name: d
    after: d
    action: etcd-start
  - name: a
    at: 1s
    action: etcd-stop
`),
		want: []string{
			`s.yaml:5:12: step "a": after forms a cycle: a -> b -> a`,
			`s.yaml:11:12: step "c": after "nope": no such step (steps: a, b, c, d)`,
			`s.yaml:14:12: step "d": after names the step itself`,
			`s.yaml:16:11: duplicate step name "a" (first at line 4)`,
		},
	},
	{
		name: "at and after both, and neither",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
timeline:
  - {name: a, at: 1s, after: a, action: etcd-stop}
  - {name: b, action: etcd-start}
`),
		want: []string{
			`s.yaml:4:30: step "a": at and after exclude each other: use one`,
			`s.yaml:5:5: step "b": needs at (an offset from ready) or after (a step name)`,
		},
	},
	{
		name: "lab name over 32 characters from the scenario name",
		yaml: doc(`
apiVersion: overlaylab/v1
name: a-scenario-name-of-forty-characters-xyzw
`),
		want: []string{`s.yaml:2:7: name "a-scenario-name-of-forty-characters-xyzw" is the lab name unless lab: is given: at most 32 characters (this one has 40)`},
	},
	{
		name: "scenario name that is no lab name",
		yaml: doc(`
apiVersion: overlaylab/v1
name: agent_restart
`),
		want: []string{`s.yaml:2:7: name "agent_restart" is the lab name unless lab: is given: use lower-case letters, digits and '-', starting with a letter`},
	},
	{
		name: "lab name with a part that looks like a namespace suffix",
		yaml: doc(`
apiVersion: overlaylab/v1
name: agent-restart
lab: restart-h2
`),
		want: []string{`s.yaml:3:6: lab "restart-h2": the part "h2" looks like a lab namespace suffix (ul, etcdN, hN, cN); pick another`},
	},
	{
		name: "overlapping underlay and overlay",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network:
  network: 192.168.0.0/16
`),
		want: []string{`s.yaml:4:12: network 192.168.0.0/16 overlaps underlay 192.168.77.0/24: pick disjoint ranges`},
	},
	{
		name: "underlay overlapping the default network",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
underlay: {cidr: 10.10.7.0/24}
`),
		want: []string{`s.yaml:3:18: underlay 10.10.7.0/24 overlaps the default network 10.10.0.0/16: pick disjoint ranges`},
	},
	{
		name: "too many hosts for the network",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network:
  network: 10.10.0.0/28
  subnetLen: 30
hosts:
  count: 4
  containers: 1
`),
		want: []string{`s.yaml:7:10: hosts: 4 hosts, but network 10.10.0.0/28 with /30 subnets holds only 3 leasable subnets: use a larger network or a longer subnetLen`},
	},
	{
		name: "host-add beyond the network",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network: {network: 10.10.0.0/28, subnetLen: 30}
hosts:
  - containers: 1
  - containers: 1
timeline:
  - {name: add3, at: 1s, action: host-add}
  - {name: add4, at: 2s, action: host-add}
`),
		want: []string{`s.yaml:9:34: step "add4": host-add makes h4, but network 10.10.0.0/28 with /30 subnets holds only 3 leasable subnets: use a larger network or a longer subnetLen`},
	},
	{
		name: "containers do not fit the subnet",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
network: {subnetLen: 29}
hosts:
  - containers: 6
  - {}
timeline:
  - {at: 1s, action: host-add, containers: 300}
`),
		want: []string{
			`s.yaml:5:17: containers 6: a /29 subnet holds only 5 containers besides the bridge`,
			`s.yaml:8:44: step 1: containers 300: must be 0..250`,
		},
	},
	{
		name: "too many hosts for the underlay",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
hosts: {count: 250}
`),
		want: []string{`s.yaml:3:16: hosts: 250 hosts, but underlay 192.168.77.0/24 holds 248 hosts (host i is its i-th address, etcd the top 6): use a larger underlay`},
	},
	{
		name: "ping results, selectors and check kinds",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
expect:
  - name: p1
    ping: {from: "h1/*", to: "*/*", result: some}
    at: 1s
  - name: p2
    ping: {from: "h1/x", to: "h7", result: "loss<=120%"}
    at: 1s
  - name: p3
    at: 1s
  - name: p4
    ping: {from: h1, to: h2}
    lease: {host: h1, state: unchanged}
    final: true
  - name: p5
    ping: {from: h1, to: "*/c3"}
`),
		want: []string{
			`s.yaml:5:45: expect "p1": ping result "some": want all, none or loss<=N% (N in 0..100)`,
			`s.yaml:8:18: expect "p2": ping from "h1/x": want HOST/CONTAINER such as h1/c2, h1/*, */* or h1`,
			`s.yaml:8:30: expect "p2": ping to "h7": unknown host h7 (hosts: h1..h3)`,
			`s.yaml:8:44: expect "p2": ping result "loss<=120%": want all, none or loss<=N% (N in 0..100)`,
			`s.yaml:10:5: expect "p3": needs a check: one of ping, encap, lease, route, agent, pmtu, flow, tcp, log, resources, metric, neigh or fdb`,
			`s.yaml:14:12: expect "p4": has both ping and lease: one check per expectation`,
			`s.yaml:16:5: expect "p5": needs one of at (an offset from ready), after (a step), during (a window) or final: true`,
			`s.yaml:17:26: expect "p5": ping to "*/c3": no host has a container c3 (the most is 2)`,
		},
	},
	{
		name: "selector against a host's containers and a missing selector",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
hosts:
  - containers: 2
  - containers: 0
expect:
  - name: p
    ping: {from: h1/c3, to: h2}
    final: true
  - name: q
    ping: {to: h1}
    final: true
`),
		want: []string{
			`s.yaml:8:18: expect "p": ping from "h1/c3": h1 has 2 containers`,
			`s.yaml:8:29: expect "p": ping to "h2": h2 has no containers`,
			`s.yaml:11:11: expect "q": ping from is required (e.g. */*, h1/*, h2/c1)`,
		},
	},
	{
		name: "expectation timing",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
timeline:
  - {name: s1, at: 1s, action: etcd-stop}
expect:
  - name: a
    agent: {host: h1, exitCode: 0}
    at: 1s
    final: true
  - name: b
    agent: {host: h1, exitCode: 0}
    during: {from: s1}
    within: 1s
  - name: c
    agent: {host: h1, exitCode: 0}
    at: 2s
    delay: 1s
  - agent: {host: h1, exitCode: 0}
    final: true
`),
		want: []string{
			`s.yaml:9:12: expect "a": at and final exclude each other: use one`,
			`s.yaml:12:13: expect "b": during needs to (an offset or a step)`,
			`s.yaml:13:13: expect "b": within applies to point checks, not to a during window`,
			`s.yaml:17:12: expect "c": delay goes with after (with at, add it to the offset)`,
			`s.yaml:18:5: expect 4: name is required`,
		},
	},
	{
		name: "embedded etcd and endpoints",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
etcd:
  embedded: true
  endpoints: [http://127.0.0.1:2379]
`),
		want: []string{`s.yaml:4:13: etcd: embedded: true and endpoints exclude each other (endpoints means an external etcd)`},
	},
	{
		name: "bad endpoints and etcd-stop on an external etcd",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
etcd:
  endpoints: ["http://10.0.0.1:2379", "ftp://x", "http://nohost", "http://h:99999", "https://e:2379"]
timeline:
  - {at: 1s, action: etcd-stop}
`),
		want: []string{
			`s.yaml:4:39: etcd endpoints: give one (the lab proxies it into the lab at the etcd address)`,
			`s.yaml:4:39: etcd endpoint "ftp://x": scheme must be http (want http://HOST:PORT)`,
			`s.yaml:4:50: etcd endpoint "http://nohost": no port (want http://HOST:PORT)`,
			`s.yaml:4:67: etcd endpoint "http://h:99999": port "99999" is not 1..65535`,
			`s.yaml:4:85: etcd endpoint "https://e:2379": TLS endpoints are not proxied into a lab yet; use http`,
			`s.yaml:6:22: step 1: etcd-stop needs the embedded etcd (this scenario uses an external one)`,
		},
	},
	{
		name: "bad and negative durations",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
timeline:
  - at: 2x
    action: etcd-stop
  - at: -1s
    action: etcd-start
expect:
  - name: w
    ping: {from: "*", to: "*"}
    within: -5s
    after: nope
`),
		want: []string{
			`s.yaml:4:9: step 1: at "2x" is not a duration (want e.g. 500ms, 2s, 1m)`,
			`s.yaml:6:9: step 2: at -1s is negative`,
			`s.yaml:11:13: expect "w": within -5s is negative`,
			`s.yaml:12:12: expect "w": after "nope": no such step (no step has a name)`,
		},
	},
	{
		name: "fault and check words of the second vocabulary",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
timeline:
  - {name: s1, at: 1s, action: impair, host: h1}
  - {name: s2, at: 1s, action: impair, host: h1, delay: 5, jitter: 2ms, direction: up, match: some}
  - {name: s3, at: 1s, action: impair, host: h1, reorder: 5%, loss: 120%}
  - {name: s4, at: 1s, action: link-mtu, host: h1, mtu: 40}
  - {name: s5, at: 1s, action: offload, host: h1, dev: eth0}
  - {name: s6, at: 1s, action: offload, host: h1, dev: eth0, tso: maybe}
  - {name: s7, at: 1s, action: agent-upgrade, host: h1}
  - {name: s8, at: 1s, action: etcd-compact, host: h1}
  - {name: s9, at: 1s, action: impair-clear, host: h1, delay: 2s}
expect:
  - {name: e1, pmtu: {from: "h1/*", to: h2/c1}, at: 1s}
  - {name: e2, flow: {from: h1/c1, to: h2/c1, proto: sctp}, during: {from: 1s, to: 2s}}
  - {name: e3, flow: {from: h1/c1, to: h2/c1}, at: 1s}
  - {name: e4, tcp: {from: h1/c1, to: h2/c1, port: 70000, result: maybe}, at: 1s}
  - {name: e5, log: {host: h1, match: "(", count: "about 3"}, at: 1s}
  - {name: e6, resources: {host: h1, cpu: "<=20", rss: "<=lots"}, during: {from: 1s, to: 2s}}
  - {name: e7, metric: {host: h1, name: "bad name", value: ">=x"}, at: 1s}
  - {name: e8, neigh: {host: h1, ip: nope, lladdr: zz}, at: 1s}
  - {name: e9, fdb: {host: h1, mac: "02:4f", dst: "peer:h9"}, at: 1s}
  - {name: e10, route: {host: h1, dst: peer:h2, via: "peer:h8"}, at: 1s}
  - {name: e11, ping: {from: "*/*", to: "*/*", size: 20, df: true}, at: 1s}
  - {name: e12, resources: {host: h1}, during: {from: 1s, to: 2s}}
`),
		want: []string{
			"s.yaml:4:32: step \"s1\": impair needs at least one of delay, jitter, loss, reorder, duplicate, corrupt, rate (impair-clear removes an impairment)",
			"s.yaml:5:57: step \"s2\": delay \"5\" is not a duration (want e.g. 500ms, 2s, 1m)",
			"s.yaml:5:84: step \"s2\": direction \"up\": want in, out, both",
			"s.yaml:5:95: step \"s2\": match \"some\": want all, overlay, control",
			"s.yaml:6:59: step \"s3\": reorder sends some packets ahead of the delayed ones: set delay too",
			"s.yaml:6:69: step \"s3\": loss 120% is outside 0..100%",
			"s.yaml:7:57: step \"s4\": mtu 40: must be 68..9000 (0 removes the narrower hop)",
			"s.yaml:8:32: step \"s5\": offload needs at least one of tx-checksum, tso, gro (on or off)",
			"s.yaml:9:67: step \"s6\": tso \"maybe\": want on or off",
			"s.yaml:10:32: step \"s7\": action agent-upgrade needs binary",
			"s.yaml:11:52: step \"s8\": action etcd-compact does not take host (it takes no parameters)",
			"s.yaml:12:63: step \"s9\": delay goes with after (with at, add it to the offset)",
			"s.yaml:14:22: expect \"e1\": pmtu needs mtu (the largest IP packet, with DF, expected to pass)",
			"s.yaml:14:29: expect \"e1\": pmtu from \"h1/*\": name one container (e.g. h1/c1)",
			"s.yaml:15:54: expect \"e2\": flow proto \"sctp\": want tcp or udp",
			"s.yaml:16:22: expect \"e3\": flow is measured over a window: use during: {from, to}",
			"s.yaml:17:52: expect \"e4\": tcp port 70000: must be 1..65535",
			"s.yaml:17:67: expect \"e4\": tcp result \"maybe\": want connect, refused or timeout",
			"s.yaml:18:39: expect \"e5\": log match \"(\": error parsing regexp: missing closing ): `(`",
			"s.yaml:18:51: expect \"e5\": log count \"about 3\": want OP VALUE with OP one of ==, <=, <, >=, > (e.g. \"<=3\"); \"about 3\": want a non-negative number",
			"s.yaml:19:43: expect \"e6\": resources cpu \"<=20\": want OP VALUE with OP one of ==, <=, <, >=, > (e.g. \"<=3\"); \"20\": want a percentage of one core, e.g. 20%",
			"s.yaml:19:56: expect \"e6\": resources rss \"<=lots\": want OP VALUE with OP one of ==, <=, <, >=, > (e.g. \"<=3\"); \"lots\" is not a size (want e.g. 64MiB, 512KiB)",
			"s.yaml:20:41: expect \"e7\": metric name \"bad name\": want a Prometheus metric name (e.g. overlaylab_peers)",
			"s.yaml:20:60: expect \"e7\": metric value \">=x\": want OP VALUE with OP one of ==, <=, <, >=, > (e.g. \"<=3\"); \"x\": want a number",
			"s.yaml:21:38: expect \"e8\": neigh needs ip (an IPv4 address, or peer:HOST for that host's VTEP address)",
			"s.yaml:21:52: expect \"e8\": neigh lladdr \"zz\": not a MAC address",
			"s.yaml:22:37: expect \"e9\": fdb mac \"02:4f\": not a MAC address",
			"s.yaml:22:51: expect \"e9\": fdb dst \"peer:h9\": unknown host \"h9\" (hosts: h1..h3)",
			"s.yaml:23:54: expect \"e10\": route via \"peer:h8\": unknown host \"h8\" (hosts: h1..h3)",
			"s.yaml:24:54: expect \"e11\": ping size 20: an IP packet of 36..65535 bytes (ICMP needs 28 of them)",
			"s.yaml:25:28: expect \"e12\": resources needs cpu or rss (e.g. cpu: \"<=20%\", rss: \"<=64MiB\")",
		},
	},
	{
		name: "action parameters",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
timeline:
  - at: 1s
    action: etcd-stop
    host: h1
  - at: 1s
    action: loss
    host: h1
  - at: 1s
    action: rate
    host: h1
    rate: 10mbps
  - at: 1s
    action: agent-kill
    host: h1
    signal: HUP
  - at: 1s
    action: explode
  - at: 1s
    delay: 1s
    action: config-set
  - at: 1s
    action: loss
    host: h1
    percent: 101%
`),
		want: []string{
			`s.yaml:6:11: step 1: action etcd-stop does not take host (it takes: member)`,
			`s.yaml:8:13: step 2: action loss needs percent`,
			`s.yaml:13:11: step 3: rate "10mbps" is not a rate (want e.g. 500kbit, 10mbit, 1gbit, or unlimited)`,
			`s.yaml:17:13: step 4: signal "HUP": want TERM, KILL or INT`,
			`s.yaml:19:13: step 5: unknown action "explode" (actions: agent-kill, agent-start, link-down, link-up, loss, rate, etcd-stop, etcd-start, etcd-partition, etcd-heal, lease-delete, host-add, host-remove, config-set, impair, impair-clear, link-mtu, etcd-compact, etcd-wipe, offload, agent-upgrade)`,
			`s.yaml:21:12: step 6: delay goes with after (with at, add it to the offset)`,
			`s.yaml:22:13: step 6: action config-set needs config`,
			`s.yaml:26:14: step 7: percent 101% is outside 0..100%`,
		},
	},
	{
		name: "header, backend, underlay and artifacts",
		yaml: doc(`
apiVersion: overlaylab/v2
lab: Bad-Lab
network:
  backend: {type: udp, vni: 3}
underlay: {cidr: 192.168.77.5/24, mtu: 100}
hosts:
  - containers: 300
  - {}
artifacts: {pcap: sometimes}
`),
		want: []string{
			`s.yaml:1:1: name is required`,
			`s.yaml:1:13: apiVersion "overlaylab/v2" is not supported (want overlaylab/v1)`,
			`s.yaml:2:6: lab "Bad-Lab": use lower-case letters, digits and '-', starting with a letter`,
			`s.yaml:4:29: backend vni: only the vxlan backend has a VNI (this one is udp)`,
			`s.yaml:5:18: underlay cidr "192.168.77.5/24": host bits must be zero (did you mean "192.168.77.0/24"?)`,
			`s.yaml:5:40: underlay mtu 100: must be 576..9000`,
			`s.yaml:7:17: containers 300: must be 0..250`,
			`s.yaml:9:19: artifacts pcap "sometimes": want failing, always or never`,
		},
	},
	{
		name: "check parameters",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
name: t2
expect:
  - name: e
    agent: {host: h1, exitCode: 0}
    final: true
  - name: e
    agent: {host: h1}
    final: true
  - name: r
    route: {host: h1, dst: peer:h1}
    final: true
  - name: r2
    route: {host: h1, dst: 10.0.0.1/8}
    final: true
  - name: en
    encap: {host: h2, vni: 5}
    during: {from: 3s, to: 2s}
  - name: l
    lease: {host: h4, state: gone}
    final: true
  - name: lg
    agent: {host: h1, log: "(", exitCode: 1}
    final: true
`),
		want: []string{
			`s.yaml:3:1: duplicate field "name" in scenario (first at line 2)`,
			`s.yaml:8:11: duplicate expectation name "e" (first at line 5)`,
			`s.yaml:9:12: expect "e": agent needs exitCode, log, alive, ready or restarts`,
			`s.yaml:12:28: expect "r": route dst "peer:h1": a host's own subnet is on its bridge, not routed to a peer`,
			`s.yaml:15:28: expect "r2": route dst "10.0.0.1/8": host bits must be zero (did you mean "10.0.0.0/8"?)`,
			`s.yaml:18:28: expect "en": encap vni: only the vxlan backend has a VNI (this one is udp)`,
			`s.yaml:19:28: expect "en": during to 2s is not after from 3s`,
			`s.yaml:21:19: expect "l": lease: unknown host "h4" (hosts: h1..h3)`,
			`s.yaml:21:30: expect "l": lease state "gone": want unchanged or changed`,
			`s.yaml:24:28: expect "lg": agent exitCode and log exclude each other (exitCode; log; or any of alive, ready, restarts)`,
		},
	},
	{
		name: "YAML syntax error",
		yaml: doc(`
apiVersion: overlaylab/v1
name: t1
hosts:
  count: 3
 containers: 2
`),
		want: []string{`s.yaml:4:1: invalid YAML: did not find expected key`},
	},
	{
		name: "tab indentation",
		yaml: "apiVersion: overlaylab/v1\nname: t1\nhosts:\n\tcount: 3\n",
		want: []string{`s.yaml:4:1: invalid YAML: found character that cannot start any token`},
	},
	{
		name: "empty file",
		yaml: "",
		want: []string{`s.yaml:1:1: empty scenario file (want a mapping starting with apiVersion: overlaylab/v1)`},
	},
	{
		name: "not a mapping",
		yaml: "- apiVersion: overlaylab/v1\n",
		want: []string{`s.yaml:1:1: scenario: want a mapping, got a sequence`},
	},
	{
		name: "two documents",
		yaml: "apiVersion: overlaylab/v1\nname: t1\n---\nname: t2\n",
		want: []string{`s.yaml:3:1: a second YAML document: a scenario file holds exactly one`},
	},
	{
		name: "aliases",
		yaml: doc(`
apiVersion: overlaylab/v1
name: &n t1
description: *n
hosts:
  <<: {count: 2}
`),
		want: []string{
			`s.yaml:3:14: description: YAML aliases (*n) are not supported: write the value out`,
			`s.yaml:5:3: hosts: YAML merge keys (<<) are not supported: write the fields out`,
		},
	},
}

func TestParseErrors(t *testing.T) {
	for _, tc := range brokenCases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse("s.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want errors:\n%s", s, strings.Join(tc.want, "\n"))
			}
			if s != nil {
				t.Errorf("Parse returned a scenario along with errors")
			}
			es, ok := err.(Errors)
			if !ok {
				t.Fatalf("error is %T, want Errors: %v", err, err)
			}
			got := strings.Split(es.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n  got:  %s\n  want: %s", strings.Join(got, "\n        "), strings.Join(tc.want, "\n        "))
			}
		})
	}
}
