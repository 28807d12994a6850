//go:build !unix

package relaybench

import "time"

// CPU is CPU time used by this process, MySQL and RabbitMQ; not measured
// on this platform.
type CPU struct {
	Bench, MySQL, RabbitMQ time.Duration
}

func (a CPU) sub(b CPU) CPU { return CPU{} }

func cpuNow() CPU { return CPU{} }
