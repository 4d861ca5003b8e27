package lab

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// KillAgent sends sig to a host's agent and waits until it is gone.
func KillAgent(st *State, host string, sig syscall.Signal) error {
	h, ok := st.Host(host)
	if !ok {
		return fmt.Errorf("no host %q in lab %q", host, st.Name)
	}
	if !alive(h.AgentPID, st.Name) {
		return fmt.Errorf("agent on %s (pid %d) is not running", host, h.AgentPID)
	}
	return stop(h.AgentPID, st.Name, sig, 5*time.Second)
}

// RestartAgent starts a host's agent again with the flags it had, waits
// until it is ready and saves the new PID.
func RestartAgent(ctx context.Context, st *State, bin, host string) error {
	h, ok := st.Host(host)
	if !ok {
		return fmt.Errorf("no host %q in lab %q", host, st.Name)
	}
	if alive(h.AgentPID, st.Name) {
		return fmt.Errorf("agent on %s (pid %d) is still running", host, h.AgentPID)
	}
	if err := StartAgent(st, h, bin, nil); err != nil {
		return err
	}
	if err := st.Save(); err != nil {
		return err
	}
	if err := WaitAgents(ctx, st, 30*time.Second, []string{host}); err != nil {
		return err
	}
	return st.Save()
}

// AgentAlive reports whether a host's agent runs.
func (s *State) AgentAlive(host string) bool {
	h, ok := s.Host(host)
	return ok && alive(h.AgentPID, s.Name)
}
