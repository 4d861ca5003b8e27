package run

import (
	"sync"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/scenarios"
	"github.com/overlaylab/overlaylab/scenarios/report"
)

// events is an ordered, goroutine-safe log of what the scheduler did.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.log = append(e.log, s)
	e.mu.Unlock()
}

func (e *events) index(s string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, v := range e.log {
		if v == s {
			return i
		}
	}
	return -1
}

func expectation(name string, kind scenarios.WhenKind) scenarios.Expectation {
	return scenarios.Expectation{Name: name, When: scenarios.When{Kind: kind}}
}

// scheduleWithin runs schedule and fails the test if it has not returned
// within a few seconds (a channel it should have closed was not).
func scheduleWithin(t *testing.T, expects []scenarios.Expectation, play func(), stepsOver chan struct{},
	check func(*scenarios.Expectation) report.ExpectResult) []report.ExpectResult {
	t.Helper()
	done := make(chan []report.ExpectResult)
	go func() { done <- schedule(expects, play, stepsOver, check) }()
	select {
	case res := <-done:
		return res
	case <-time.After(5 * time.Second):
		t.Fatal("schedule did not return: a check is still waiting")
		return nil
	}
}

// TestFinalAfterWindow: a final check starts only once the steps have
// played and a window that outlasts them has closed; checks that are not
// final run while the steps play.
func TestFinalAfterWindow(t *testing.T) {
	var ev events
	stepsOver := make(chan struct{})
	windowOpen, pointRan := make(chan struct{}), make(chan struct{})
	expects := []scenarios.Expectation{
		expectation("final", scenarios.WhenFinal),
		expectation("window", scenarios.WhenDuring),
		expectation("point", scenarios.WhenAt),
	}
	play := func() {
		// Both checks that are not final run while the steps play (were
		// they held back, this would wait for ever).
		<-windowOpen
		<-pointRan
		ev.add("steps played")
	}
	check := func(e *scenarios.Expectation) report.ExpectResult {
		switch e.Name {
		case "window":
			ev.add("window start")
			close(windowOpen)
			<-stepsOver
			time.Sleep(50 * time.Millisecond) // the window ends after the last step
			ev.add("window end")
		case "point":
			ev.add("point start")
			close(pointRan)
		default:
			ev.add(e.Name + " start")
		}
		return report.ExpectResult{Name: e.Name, Passed: true}
	}
	res := scheduleWithin(t, expects, play, stepsOver, check)

	final, window, steps := ev.index("final start"), ev.index("window end"), ev.index("steps played")
	if final < 0 || window < 0 || steps < 0 {
		t.Fatalf("events %v: a check or the steps did not run", ev.log)
	}
	if final < window || final < steps {
		t.Errorf("events %v: the final check started before the window ended or the steps played", ev.log)
	}
	for i, e := range expects {
		if res[i].Name != e.Name {
			t.Errorf("result %d is %q, want %q (results follow the expectations' order)", i, res[i].Name, e.Name)
		}
	}
}

// TestStepsOverReleasesWaiters: a check waiting for a step that never
// completes (the timeline stopped early) is released when play returns,
// and then the final checks still run.
func TestStepsOverReleasesWaiters(t *testing.T) {
	stepsOver := make(chan struct{})
	var ev events
	expects := []scenarios.Expectation{
		expectation("after-a-step", scenarios.WhenAfter),
		expectation("final", scenarios.WhenFinal),
	}
	check := func(e *scenarios.Expectation) report.ExpectResult {
		if e.Name == "after-a-step" {
			<-stepsOver // as waitStep does for a step that never came
		}
		ev.add(e.Name)
		return report.ExpectResult{Name: e.Name}
	}
	scheduleWithin(t, expects, func() {}, stepsOver, check)
	if ev.index("after-a-step") < 0 || ev.index("final") < ev.index("after-a-step") {
		t.Errorf("events %v: want the waiting check released, then the final one", ev.log)
	}
}

// TestWaitStepStopsAtStepsOver: waitStep returns for a step that has not
// completed once the steps are over.
func TestWaitStepStopsAtStepsOver(t *testing.T) {
	r := &runner{done: map[string]chan struct{}{"never": make(chan struct{})}, stepsOver: make(chan struct{})}
	returned := make(chan struct{})
	go func() { r.waitStep(t.Context(), "never"); close(returned) }()
	select {
	case <-returned:
		t.Fatal("waitStep returned before the step completed or the steps were over")
	case <-time.After(50 * time.Millisecond):
	}
	close(r.stepsOver)
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("waitStep still waits after the steps are over")
	}
}
