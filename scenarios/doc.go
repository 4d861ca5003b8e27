// Package scenarios reads scenario files: YAML documents that describe a lab,
// a timeline of faults and the expectations a run must meet. It parses and
// checks them (no root, no system access); playing them is the runner's job.
//
// A file is decoded from a yaml.Node tree into the Raw* types, strictly
// (unknown keys, wrong YAML types, duplicate keys, aliases and multiple
// documents are errors), keeping every value's line and column. It is then
// resolved into a Scenario: defaults applied, values parsed, references and
// limits checked. Every problem is reported as FILE:LINE:COLUMN: message, all
// of them at once, sorted by position (see Errors).
//
// The format (apiVersion overlaylab/v1):
//
//	apiVersion: overlaylab/v1
//	name: agent-restart-udp  # letters, digits, . _ -; the lab name too unless lab: is given
//	lab: arudp               # ^[a-z0-9]+$, short: every interface name must fit 15 characters
//	seed: 42
//	description: free text
//	network:                 # flannel's network config, checked by overlay/config
//	  network: 10.10.0.0/16  # default
//	  subnetLen: 24          # default: flannel's
//	  backend: udp           # or {type: vxlan, vni: 1, port: 8472}; default udp
//	underlay:
//	  cidr: 192.168.77.0/24  # default; /24 or larger, must not overlap network
//	  mtu: 1500              # 576..9000; default: the kernel's
//	etcd:
//	  embedded: true         # default; or endpoints: [http://HOST:PORT, ...]
//	hosts:                   # a mapping ...
//	  count: 3               # default 3
//	  containers: 2          # default 2
//	  agentArgs: ["--ip-masq"]
//	  link: {rate: 100mbit, loss: 5%}   # impairment applied at start
//	# ... or a sequence, h1 first: [{containers, agentArgs, link}, ...]
//	timeline:
//	  - name: kill-h2        # optional; letters, digits, . _ -, starting with a letter
//	    at: 2s               # offset from ready; or after: STEP (+ delay: 1s)
//	    action: agent-kill
//	    host: h2
//	    signal: KILL         # TERM (default), KILL, INT
//	expect:
//	  - name: mesh           # required, unique
//	    ping: {from: "*/*", to: "*/*", result: all}   # all | none | "loss<=20%"
//	    at: 5s               # or after: STEP (+ delay) | during: {from, to} | final: true
//	    within: 10s          # point checks only; default 10s
//	artifacts:
//	  pcap: failing          # failing (default) | always | never
//	  dumps: true            # default true
//
// Actions and their parameters: agent-kill {host, signal}, agent-start {host},
// link-down {host}, link-up {host}, loss {host, percent: "20%" or 20},
// rate {host, rate: 500kbit, 10mbit, 1gbit or unlimited}, etcd-stop {},
// etcd-start {} (embedded etcd only), etcd-partition {host}, etcd-heal {host},
// lease-delete {host}, host-add {containers, agentArgs}, host-remove {host},
// config-set {config: raw text, not checked}.
//
// host-add creates the next host, h(N+1) where N is the highest index so far
// (names are never reused). Its containers and agentArgs default to those of
// the hosts mapping, or in the sequence form to those of the last host listed.
//
// Checks: ping {from, to, result} with selectors HOST/CONTAINER ("h1/c2",
// "h1/*", "*/*", "h1" = "h1/*", "*" = "*/*"); encap {host, port, vni}
// (defaults from the backend; udp and vxlan only); lease {host, state:
// unchanged|changed}; route {host, dst: CIDR or peer:HOST, present: true};
// agent {host, exitCode | log: REGEXP}. A during window's ends are offsets or
// step names (the moment that step completes); names start with a letter, so
// the two never look alike.
//
// Limits are checked against the most hosts the scenario ever has (a removed
// host is not assumed to free its subnet): fewer than 250 (host i is .i on the
// underlay, etcd .250), no more than the network's leasable subnets, and every
// interface name (ol-LAB-etcd, ol-LAB-h249, ...) within 15 characters.
//
// The order of Scenario.Steps is a contract with the runner; see Step.
package scenarios
