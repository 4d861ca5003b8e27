package lab

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/lab/plan"
)

// Phase is one step of building a lab (underlay, etcd, hosts, agents,
// containers, verify) and how long it took.
type Phase struct {
	Name string        `json:"name"`
	Took time.Duration `json:"took"`
}

// progress prints phases as they start and their durations at the end.
type progress struct {
	w      io.Writer
	start  time.Time
	cur    string
	curAt  time.Time
	phases []Phase
}

func (p *progress) phase(name string) {
	now := time.Now()
	p.closePhase(now)
	p.cur, p.curAt = name, now
	if p.w != nil {
		fmt.Fprintf(p.w, "• %s\n", name)
	}
}

func (p *progress) closePhase(now time.Time) {
	if p.cur != "" {
		name, _, _ := strings.Cut(p.cur, " (")
		p.phases = append(p.phases, Phase{Name: name, Took: now.Sub(p.curAt)})
		p.cur = ""
	}
}

func (p *progress) printf(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, format, args...)
	}
}

func (p *progress) summary(st *State, root string) {
	p.closePhase(time.Now())
	if p.w == nil {
		return
	}
	w := p.w
	took := make([]string, len(p.phases))
	for i, ph := range p.phases {
		took[i] = fmt.Sprintf("%s %s", ph.Name, ph.Took.Round(time.Millisecond))
	}
	nets := st.Network
	if st.multi() {
		var ns []string
		for _, n := range st.Networks {
			ns = append(ns, n.Name+"="+n.Network)
		}
		nets = strings.Join(ns, " ")
	}
	fmt.Fprintf(w, "\nlab %q is up: %d hosts, backend %s, network %s, runtime %s (%s; %s)\n",
		st.Name, len(st.Hosts), st.Backend, nets, st.Runtime, time.Since(p.start).Round(time.Millisecond), strings.Join(took, ", "))
	WriteTable(w, st)
	self := selfCommand()
	nameFlag := ""
	if st.Name != plan.DefaultName {
		nameFlag = " --name " + st.Name
	}
	if filepath.Clean(root) != plan.DefaultStateRoot {
		nameFlag += " --state-dir " + root
	}
	fmt.Fprintf(w, "\nLook inside:\n")
	fmt.Fprintf(w, "  %s status%s -o json\n", self, nameFlag)
	if len(st.Hosts) > 1 && len(st.Hosts[0].Containers) > 0 && len(st.Hosts[1].Containers) > 0 {
		fmt.Fprintf(w, "  ip netns exec %s ping -c1 %s\n", st.Hosts[0].Containers[0].Netns, st.Hosts[1].Containers[0].IP)
	}
	fmt.Fprintf(w, "  ip netns exec %s tcpdump -ni %s udp\n", st.Hosts[0].Netns, plan.HostIf)
	fmt.Fprintf(w, "  %s exec%s h1 -- ip route        (agent logs: %s/logs)\n", self, nameFlag, st.StateDir)
	if st.Capture != "" {
		fmt.Fprintf(w, "  capture of the check: %s\n", st.Capture)
	}
	fmt.Fprintf(w, "  %s down%s\n", self, nameFlag)
}

// seemsAlive is alive for the table: without root another user's process
// environment cannot be read (so its mark neither), and a running process
// of that PID is the best there is to go by.
func seemsAlive(pid int, lab string) bool {
	if alive(pid, lab) {
		return true
	}
	if os.Geteuid() == 0 || pid <= 0 {
		return false
	}
	return running(pid)
}

// selfCommand is how to run this binary again, as the user did: the path
// they typed when it has a slash (./bin/overlaylab), else the bare name
// found on PATH.
func selfCommand() string {
	if arg := os.Args[0]; strings.Contains(arg, "/") {
		return arg
	}
	return "overlaylab"
}

// WriteTable prints the lab as a readable table.
func WriteTable(w io.Writer, st *State) {
	fmt.Fprintf(w, "%-6s %-18s %-15s %-15s %-5s %-14s %s\n", "HOST", "NETNS", "UNDERLAY", "SUBNET", "MTU", "AGENT", "CONTAINERS")
	for _, h := range st.Hosts {
		var cs []string
		for _, c := range h.Containers {
			cs = append(cs, c.Name+"="+c.IP)
		}
		agent := fmt.Sprint(h.AgentPID)
		if !seemsAlive(h.AgentPID, st.Name) {
			agent += "(dead)"
		}
		if !h.Agent.Ours && h.Agent.Path != "" {
			agent += " " + filepath.Base(h.Agent.Path)
		}
		fmt.Fprintf(w, "%-6s %-18s %-15s %-15s %-5d %-14s %s\n", h.Name, h.Netns, h.UnderlayIP, h.Subnet, h.MTU, agent, strings.Join(cs, " "))
	}
	var ms []string
	for _, m := range st.Etcd.Members {
		state := ""
		if !seemsAlive(m.PID, st.Name) {
			state = ",dead"
		}
		ms = append(ms, fmt.Sprintf("%s in %s (pid %d%s)", m.IP, m.Netns, m.PID, state))
	}
	fmt.Fprintf(w, "etcd %s; underlay %s on bridge %s in %s\n", strings.Join(ms, ", "), st.Underlay.CIDR, st.Underlay.Bridge, st.Underlay.Netns)
}
