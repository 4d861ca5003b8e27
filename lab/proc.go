package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// EnvLab marks every process a lab starts; teardown finds its own processes
// by this mark (and their PIDs), never by command-line patterns.
const EnvLab = "OVERLAYLAB_LAB"

// EnvRole names the role (etcd, agent-h1, ...) of a lab process.
const EnvRole = "OVERLAYLAB_ROLE"

// spawn starts bin with args inside the named namespace ("" = the root
// namespace), in its own session (so it outlives the controller), logging
// to logPath. ours marks overlaylab's own processes (they get its tuning).
// agentMemLimit is the GOMEMLIMIT of the lab's own agents.
const agentMemLimit = "16MiB"

func spawn(bin, nsName, lab, role string, args []string, logPath string, ours bool) (int, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open log %s: %w", logPath, err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), EnvLab+"="+lab, EnvRole+"="+role)
	// A lab packs many "hosts" onto a few cores: one scheduler thread per
	// agent keeps them from fighting each other (measured: +15-25% udp
	// throughput on 2 cores). A GOMAXPROCS the user set wins.
	if ours && strings.HasPrefix(role, "agent-") && os.Getenv("GOMAXPROCS") == "" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	// And a soft memory limit: an agent's live heap is a few MiB (its
	// datapath allocates nothing per packet), and without a limit the
	// collector lets it double; measured on a 300-host lab, 16 MiB takes
	// an idle agent from 23 to 17 MiB private memory at no visible CPU
	// cost. A GOMEMLIMIT or GOGC the user set wins.
	if ours && strings.HasPrefix(role, "agent-") && os.Getenv("GOMEMLIMIT") == "" && os.Getenv("GOGC") == "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+agentMemLimit)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The child inherits the netns of the thread that forks it.
	start := cmd.Start
	if nsName != "" {
		start = func() error { return nsutil.DoNamed(nsName, cmd.Start) }
	}
	if err := start(); err != nil {
		return 0, fmt.Errorf("start %s in %s: %w", role, nsName, err)
	}
	pid := cmd.Process.Pid
	// Reap it if it dies while we are still running, so liveness checks by
	// PID do not see a zombie.
	// Its end is recorded beside its log ("PID CODE how") for checks on an
	// agent's exit; only while this process lives, which is how scenarios
	// run.
	go func() {
		err := cmd.Wait()
		how := "exit 0"
		if err != nil {
			how = err.Error()
		}
		// The code as a shell reports it: 128+N for a death by signal N.
		code := cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		line := fmt.Sprintf("%d %d %s\n", pid, code, how)
		_ = os.WriteFile(exitPath(logPath), []byte(line), 0o644)
	}()
	return pid, nil
}

// procMark returns the lab and role marks of a process, or ok=false if it
// is not one of ours (or is gone).
func procMark(pid int) (lab, role string, ok bool) {
	path := "/proc/" + strconv.Itoa(pid) + "/environ"
	data, err := os.ReadFile(path)
	// A process in the middle of exec has an empty environment for a
	// moment (the new image's is set up after its close-on-exec files are
	// closed, which is when cmd.Start returns): read again shortly.
	for try := 0; err == nil && len(data) == 0 && try < 50; try++ {
		time.Sleep(time.Millisecond)
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return "", "", false
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		s := string(kv)
		if v, found := strings.CutPrefix(s, EnvLab+"="); found {
			lab = v
		} else if v, found := strings.CutPrefix(s, EnvRole+"="); found {
			role = v
		}
	}
	return lab, role, lab != ""
}

// alive reports whether pid is a running (not zombie) process of this lab.
func alive(pid int, lab string) bool {
	if pid <= 0 {
		return false
	}
	l, _, ok := procMark(pid)
	switch {
	case ok && l != lab:
		return false
	case !ok:
		// Still no environment: a process our spawn started and that is
		// still in exec (a machine busy with hundreds of agents starting
		// keeps one there for longer than procMark waits) is alive; its
		// state says so. Anything else unmarked is not ours.
		env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil || len(env) != 0 {
			return false
		}
	}
	return running(pid)
}

// running reports whether pid is a process that has not exited (a zombie
// has).
func running(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Field 3, after the parenthesised command name, is the state.
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

// labProcesses lists the PIDs marked with lab (any lab when lab is "").
func labProcesses(lab string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		l, _, ok := procMark(pid)
		if ok && (lab == "" || l == lab) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stop ends one of our processes: SIGTERM, then SIGKILL after grace. It
// signals only a PID that still carries the lab's mark, so a recycled PID is
// never hit.
func stop(pid int, lab string, sig syscall.Signal, grace time.Duration) error {
	if !alive(pid, lab) {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid, lab) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if alive(pid, lab) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
		for i := 0; i < 100 && alive(pid, lab); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// tail returns the last n lines of a log, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
