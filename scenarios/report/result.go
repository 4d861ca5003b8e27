// Package report writes what a scenario run leaves behind: result.json, a
// JUnit XML and a self-contained HTML page per run, and for a suite of runs
// one combined JUnit and an index page.
package report

import "time"

// Result is everything a run leaves behind, written as result.json, a JUnit
// XML and an HTML report. Paths inside are relative to the output dir.
type Result struct {
	Scenario string `json:"scenario"`
	// Label names the run in a suite (scenario, agent, repetition).
	Label    string        `json:"label,omitempty"`
	File     string        `json:"file"`
	Lab      string        `json:"lab"`
	Seed     int64         `json:"seed"`
	Backend  string        `json:"backend"`
	Network  string        `json:"network"`
	Runtime  string        `json:"runtime,omitempty"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"durationNs"`
	Passed   bool          `json:"passed"`
	// Error is a failure outside any expectation: the lab did not come up,
	// a step could not be played.
	Error string `json:"error,omitempty"`

	Topology     Topology       `json:"topology"`
	Timeline     []StepResult   `json:"timeline"`
	Expectations []ExpectResult `json:"expectations"`
	// Artifacts lists dumps, logs and captures written to the output dir.
	Artifacts []string `json:"artifacts"`
}

// Topology is the lab as it was at ready (hosts added later appear too,
// marked by AddedAt).
type Topology struct {
	Underlay string         `json:"underlay"`
	EtcdIP   string         `json:"etcdIP"`
	Hosts    []TopologyHost `json:"hosts"`
}

// TopologyHost is one host in the drawing.
type TopologyHost struct {
	Name       string              `json:"name"`
	UnderlayIP string              `json:"underlayIP"`
	Subnet     string              `json:"subnet"`
	Agent      Agent               `json:"agent"`
	Containers []TopologyContainer `json:"containers"`
	AddedAt    *time.Duration      `json:"addedAtNs,omitempty"`   // set for host-add hosts
	RemovedAt  *time.Duration      `json:"removedAtNs,omitempty"` // set for host-remove hosts
}

// TopologyContainer is one container in the drawing.
type TopologyContainer struct {
	Name    string `json:"name"`
	IP      string `json:"ip"`
	Network string `json:"network,omitempty"`
}

// Agent is the agent a host ran: its binary and what its --version said.
type Agent struct {
	Path    string `json:"path"`
	Version string `json:"version"`
	Ours    bool   `json:"ours"`
}

// StepResult is one played step.
type StepResult struct {
	Name     string        `json:"name"` // Step.Label()
	Action   string        `json:"action"`
	Host     string        `json:"host,omitempty"`
	Detail   string        `json:"detail,omitempty"` // e.g. "signal KILL", "20%"
	At       time.Duration `json:"atNs"`             // when it started, from ready
	Duration time.Duration `json:"durationNs"`
	Error    string        `json:"error,omitempty"`
}

// ExpectResult is one checked expectation.
type ExpectResult struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	When    string `json:"when"` // human: "at 5s", "after kill-h2", "during 0s..start-h2", "final"
	Passed  bool   `json:"passed"`
	Message string `json:"message"` // what was expected and what was seen, one or a few lines
	// Start and End bound the check in time, from ready.
	Start time.Duration `json:"startNs"`
	End   time.Duration `json:"endNs"`
	// Matrix is set for ping checks.
	Matrix *MatrixResult `json:"matrix,omitempty"`
	// Pcap is the capture of the check's window (relative path), if kept.
	Pcap string `json:"pcap,omitempty"`
	// Flow is set for flow checks: what the receiver saw over time.
	Flow *FlowResult `json:"flow,omitempty"`
}

// FlowResult is a long-lived flow as its receiver saw it.
type FlowResult struct {
	Proto    string        `json:"proto"`
	Bytes    int64         `json:"bytes"`
	Duration time.Duration `json:"durationNs"`
	MaxStall time.Duration `json:"maxStallNs"`
	Broken   string        `json:"broken,omitempty"`
	Samples  []FlowSample  `json:"samples"`
}

// FlowSample is the bytes received by a moment of the flow.
type FlowSample struct {
	At    time.Duration `json:"atNs"`
	Bytes int64         `json:"bytes"`
}

// MatrixResult is a ping matrix: rows are sources, columns targets, in
// Endpoints order ("h1/c1"). Sent and Received count probes per pair; a
// pair not probed has Sent 0. Want says whether a pair is expected to
// answer (all), not to answer (none), or within the loss budget (loss).
type MatrixResult struct {
	Endpoints []string   `json:"endpoints"`
	Want      [][]string `json:"want"` // "answer", "silent", "" (not probed)
	Sent      [][]int    `json:"sent"`
	Received  [][]int    `json:"received"`
	// Bad marks the cells that broke the expectation.
	Bad [][]bool `json:"bad"`
}
