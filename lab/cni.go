package lab

import (
	"context"
	"errors"
)

// attachCNI attaches a container through the CNI plugins (see internal/cni).
func (l *Lab) attachCNI(ctx context.Context, h *HostState, network string, j int) (ContainerState, error) {
	return ContainerState{}, errors.New("the cni runtime is not wired yet")
}

// detachCNI runs CNI DEL for a container.
func (l *Lab) detachCNI(ctx context.Context, h *HostState, c ContainerState) error {
	return nil
}
