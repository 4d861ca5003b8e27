// Package scenarios reads scenario files: YAML documents that describe a lab,
// a timeline of faults and the expectations a run must meet. It parses and
// checks them (no root, no system access); playing them is the runner's job
// (package scenarios/run).
//
// A file is decoded from a yaml.Node tree into the Raw* types, strictly
// (unknown keys, wrong YAML types, duplicate keys, aliases and a second
// document are errors; an unknown key's error lists the allowed ones), keeping
// every value's line and column. It is then resolved into a Scenario: defaults
// applied, values parsed, references and limits checked. Every problem is
// reported as FILE:LINE:COLUMN: message, all of them at once, sorted by
// position (see Errors).
//
// # The format
//
// apiVersion overlaylab/v1:
//
//	apiVersion: overlaylab/v1
//	name: agent-restart-udp  # required; letters, digits, . _ -, starting with a letter or digit, at most 63
//	lab: arudp               # the lab's name (default: name); a lab name: 1 to 32 of a-z, 0-9 and '-',
//	                         # starting with a letter, no part that looks like a namespace suffix (ul, hN, ...)
//	seed: 42                 # the lab's seed (subnets) and impair's default seed
//	description: free text
//	runtime: bridge          # bridge (default) or cni
//	network:                 # flannel's network config, checked by overlay/config
//	  network: 10.10.0.0/16  # default, whatever the host count
//	  subnetLen: 24          # default: flannel's rule
//	  mtu: 1400              # flannel's MTU; default 0 (derived from the interface)
//	  backend: udp           # udp (default), vxlan, host-gw, or {type: vxlan, vni: 1, port: 8472}
//	# ... or, instead of network, tenant networks on the same hosts:
//	# networks: [{name: red, network: 10.10.0.0/16, backend: vxlan}, {name: blue, ...}]
//	underlay:
//	  cidr: 192.168.77.0/24  # default; a /28 or larger, not overlapping the network
//	  mtu: 1500              # 576..9000; default: the kernel's
//	etcd:
//	  embedded: true         # default; or members: 1|3|5; or endpoints: [http://HOST:PORT] (one, http)
//	hosts:                   # a mapping ...
//	  count: 3               # default 3; 1..65000
//	  containers: 2          # default 2; 0..250 per host (and network)
//	  agentArgs: ["--ip-masq"]
//	  link: {rate: 100mbit, loss: 5%}   # applied at start (tbf, nftables)
//	  agent: ../../bin/flanneld         # every host's agent (default overlaylab's own)
//	# ... or a sequence, h1 first:
//	# [{containers, agentArgs, link, agent: {binary: PATH, args: [...]}}, ...]
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
// Tenant networks (networks:) each have a name (1 to 8 of a-z and 0-9,
// starting with a letter) and the keys of network; the k-th (from 0) gets
// VNI 1+k or udp port 8285+k unless it gives its own. They share one
// backend, may share a CIDR (not with host-gw), and need the bridge runtime.
// An agent path is resolved against the scenario file's directory when it is
// relative.
//
// # Steps
//
// Actions and their parameters:
//
//	agent-kill      host, signal
//	agent-start     host, wait (default true; false: do not wait for ready)
//	agent-upgrade   host, binary (stop it, start binary with the same flags)
//	link-down       host
//	link-up         host
//	loss            host, percent ("20%" or 20; 0 removes it)
//	rate            host, rate (500kbit, 10mbit, 1gbit; unlimited removes it)
//	impair          host, at least one of delay, jitter, loss, reorder,
//	                duplicate, corrupt, rate; direction (in, out, both),
//	                match (all, overlay, control), seed
//	impair-clear    host
//	link-mtu        host, mtu (68..9000)
//	etcd-stop       member (1..N, leader, follower; default 1)
//	etcd-start      member (1..N, stopped; default 1)
//	etcd-partition  host
//	etcd-heal       host
//	etcd-compact    (none)
//	etcd-wipe       keepConfig
//	offload         host, dev, at least one of tx-checksum, tso, gro (on, off)
//	lease-delete    host, network (tenants)
//	host-add        containers, agentArgs
//	host-remove     host
//	config-set      config (raw text, not checked), network (tenants)
//
// etcd-stop, etcd-start and etcd-wipe need the embedded etcd. In an impair
// step, delay is the link's delay (the link emulator holds every packet that
// long), not the step's timing: an impair step has no timing delay. jitter
// and reorder need delay.
//
// Steps are played one at a time, in the order of Scenario.Steps (see Step).
// host-add creates the next host, h(N+1) where N is the highest index so far:
// host names are never reused, so a removed host's name never comes back.
// Its containers and agentArgs default to those of the hosts mapping, or in
// the sequence form to those of the last host listed. A step's host must
// exist at that point of the order.
//
// # Checks
//
// Each expectation has one check and one moment: at an offset from ready,
// after a step (plus delay), during a window (from, to: offsets or step
// names), or final: after every step and every other check has ended. A
// point check is retried until it holds or within passes; a window check
// must hold throughout.
//
//	ping       from, to, result, size (36..65535), df
//	encap      host, port, vni (defaults from the backend; udp and vxlan)
//	lease      host, state (unchanged, changed), network (tenants)
//	route      host, dst (CIDR or peer:HOST), via (IP or peer:HOST), present
//	neigh      host, ip (IP or peer:HOST), lladdr, dev, present
//	fdb        host, mac and/or dst (IP or peer:HOST), dev, present
//	agent      host, and exitCode | log: REGEXP | any of alive, ready, restarts
//	log        host, match (REGEXP), count (default ">=1")
//	metric     host, name, labels, value
//	tcp        from, to, port, result (connect, refused, timeout), within
//	pmtu       from, to, mtu (68..65535)
//	flow       from, to, proto (tcp, udp), maxStall, minRate (during only)
//	resources  host, cpu, rss (during only)
//
// Selectors are HOST/CONTAINER ("h1/c2", "h1/*", "*/*", "h1" = "h1/*", "*"
// = "*/*"); with networks, containers carry their network ("h1/red-c1",
// "*/red-*"). count, restarts, value, cpu and rss are comparisons: an
// operator (==, <=, <, >=, >) and a number, cpu in percent of one core, rss
// with a unit (64MiB). A during window's ends are offsets or step names (the
// moment that step completes); names start with a letter, so the two never
// look alike.
//
// # Limits
//
// Limits are the lab's, asked of lab/plan, and checked against the most
// hosts the scenario ever has (a removed host is not assumed to free its
// subnet or its underlay address): no more hosts than the underlay holds
// (host i is its i-th address, etcd the top plan.EtcdSlots+1) and than
// plan.MaxHosts, no more than the network's leasable subnets, no more
// containers than a subnet holds besides its bridge, and a valid lab name.
//
// The order of Scenario.Steps is a contract with the runner; see Step.
package scenarios
