//go:build unix

package relaybench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPU is CPU time used by this process and, when they run on this machine
// and /proc is readable, by MySQL/MariaDB and RabbitMQ.
type CPU struct {
	Bench, MySQL, RabbitMQ time.Duration
}

func (a CPU) sub(b CPU) CPU {
	return CPU{Bench: a.Bench - b.Bench, MySQL: a.MySQL - b.MySQL, RabbitMQ: a.RabbitMQ - b.RabbitMQ}
}

// clockTick is USER_HZ, 100 on every Linux platform Go supports.
const clockTick = 10 * time.Millisecond

func cpuNow() CPU {
	var u CPU
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		u.Bench = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid … utime(14) stime(15)
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		comm := s[open+1 : end]
		fields := strings.Fields(s[end+1:])
		if len(fields) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(fields[11], 10, 64)
		st, _ := strconv.ParseInt(fields[12], 10, 64)
		d := time.Duration(ut+st) * clockTick
		switch comm {
		case "mariadbd", "mysqld":
			u.MySQL += d
		case "beam.smp":
			u.RabbitMQ += d
		}
	}
	return u
}
