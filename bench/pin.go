package bench

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// pinTasks moves every thread of the processes pids to one CPU (the first
// this process may use) and returns the CPU and a function that gives each
// thread back the mask it had (a thread started meanwhile gets its process's
// main thread's). It is how the bench shows what part of a round trip is the
// cost of waking a thread on another CPU rather than work: with everything
// on one CPU, every wakeup is a local context switch.
func pinTasks(pids []int) (cpu int, restore func(), err error) {
	var own unix.CPUSet
	if err := unix.SchedGetaffinity(0, &own); err != nil {
		return 0, nil, fmt.Errorf("own CPU mask: %w", err)
	}
	cpu = -1
	for i := 0; i < 1024 && cpu < 0; i++ {
		if own.IsSet(i) {
			cpu = i
		}
	}
	if cpu < 0 {
		return 0, nil, fmt.Errorf("no CPU in this process's mask")
	}
	saved := map[int]unix.CPUSet{} // by thread ID
	mains := map[int]unix.CPUSet{} // by process ID
	restore = func() {
		for _, pid := range pids {
			for _, tid := range tasks(pid) {
				set, ok := saved[tid]
				if !ok {
					if set, ok = mains[pid]; !ok {
						continue
					}
				}
				_ = unix.SchedSetaffinity(tid, &set)
			}
		}
	}
	var one unix.CPUSet
	one.Set(cpu)
	for _, pid := range pids {
		for _, tid := range tasks(pid) {
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &set); err != nil {
				continue // the thread ended
			}
			saved[tid] = set
			if tid == pid {
				mains[pid] = set
			}
			if err := unix.SchedSetaffinity(tid, &one); err != nil {
				restore()
				return 0, nil, fmt.Errorf("pin thread %d of %d to CPU %d: %w", tid, pid, cpu, err)
			}
		}
	}
	return cpu, restore, nil
}

// tasks lists a process's thread IDs (none if it is gone).
func tasks(pid int) []int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out
}
