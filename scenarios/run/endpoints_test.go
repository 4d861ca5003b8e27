package run

import (
	"slices"
	"testing"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/scenarios"
)

// Selectors pick the lab's containers by host and container name, tenant
// networks' "red-*" included; a one-container selector takes the first.
func TestSelectEndpoints(t *testing.T) {
	st := &lab.State{Hosts: []lab.HostState{
		{Name: "h1", Containers: []lab.ContainerState{{Name: "red-c1", IP: "10.10.1.2"}, {Name: "blue-c1", IP: "10.10.1.2"}}},
		{Name: "h2", Containers: []lab.ContainerState{{Name: "red-c1", IP: "10.10.2.2"}, {Name: "blue-c1", IP: "10.10.2.2"}}},
	}}
	eps, pair := pingPairs(st, &scenarios.PingCheck{From: scenarios.Selector{Host: "h1", Container: "red-*"}, To: scenarios.Selector{Host: "*", Container: "red-c1"}})
	var names []string
	for _, ep := range eps {
		names = append(names, ep.Name)
	}
	if !slices.Equal(names, []string{"h1/red-c1", "h2/red-c1"}) || !pair(0, 1) || pair(1, 0) || pair(0, 0) {
		t.Errorf("pingPairs = %v; pair(0,1) %v, pair(1,0) %v", names, pair(0, 1), pair(1, 0))
	}
	from, to, err := endpoints(st, scenarios.Selector{Host: "h2", Container: "blue-c1"}, scenarios.Selector{Host: "h1", Container: "red-c1"})
	if err != nil || from.Name != "h2/blue-c1" || to.Name != "h1/red-c1" || to.IP.String() != "10.10.1.2" {
		t.Errorf("endpoints = %v, %v, %v", from, to, err)
	}
	if _, _, err := endpoints(st, scenarios.Selector{Host: "h3", Container: "red-c1"}, scenarios.Selector{Host: "h1", Container: "red-c1"}); err == nil {
		t.Error("a selector with no container in the lab resolved")
	}
}
