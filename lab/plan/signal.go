package plan

import (
	"strconv"
	"strings"
	"syscall"
)

// Signals are the signals a lab sends an agent (kill, scenario agent-kill),
// by the names ps and kill use.
var Signals = map[string]syscall.Signal{"TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "INT": syscall.SIGINT}

// ParseSignal reads TERM, KILL or INT (any case, with or without SIG).
func ParseSignal(name string) (syscall.Signal, error) {
	s, ok := Signals[strings.TrimPrefix(strings.ToUpper(name), "SIG")]
	if !ok {
		return 0, &FieldError{Field: "signal", Value: strconv.Quote(name), Rule: "use TERM, KILL or INT"}
	}
	return s, nil
}
