// Package execgen counts, in the kernel, the execs, exits and renames of
// every process, so that a cache of what a process runs can tell at once
// whether it is still right. A small BPF program on the raw tracepoints
// sched_process_exec, sched_process_exit and task_rename adds one to the
// slot of the current process (its tgid modulo the number of slots) in an
// array that the daemon maps into its own memory: reading a process's
// count is one memory load, no system call.
//
// The tracepoints fire in the process itself, inside the system call,
// before it returns: after an exec, the new program cannot open anything
// before its slot has moved; before a pid can be used again, its exit has
// moved it. Nothing outside the daemon can write the array (it is not
// pinned, and its fd is the daemon's own), and two processes sharing a
// slot only cost each other a cache miss.
package execgen

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Slots is the number of counters; a power of two.
const Slots = 1 << 16

// Tracepoints are the raw tracepoints the program is attached to: where
// a process starts running another program, ends, or takes another name.
var Tracepoints = []string{"sched_process_exec", "sched_process_exit", "task_rename"}

// Counter is the loaded program and its mapped array.
type Counter struct {
	m     *ebpf.Map
	prog  *ebpf.Program
	links []link.Link
	mem   []byte
}

// Open loads and attaches the program. It needs CAP_BPF and CAP_PERFMON
// (root), and a kernel with BPF raw tracepoints and mmap-able arrays
// (Linux 5.5).
func Open() (_ *Counter, err error) {
	c := &Counter{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	c.m, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "fsmon_execgen",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: Slots,
		Flags:      unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the exec counter array: %w", err)
	}
	c.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "fsmon_execgen",
		Type:         ebpf.RawTracepoint,
		Instructions: program(c.m.FD()),
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("loading the exec counter program: %w", err)
	}
	for _, tp := range Tracepoints {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: c.prog})
		if err != nil {
			return nil, fmt.Errorf("attaching to raw tracepoint %s: %w", tp, err)
		}
		c.links = append(c.links, l)
	}
	c.mem, err = unix.Mmap(c.m.FD(), 0, Slots*8, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the exec counter array: %w", err)
	}
	return c, nil
}

// program is, in BPF assembly:
//
//	key = (bpf_get_current_pid_tgid() >> 32) & (Slots-1)
//	if v := bpf_map_lookup_elem(map, &key); v != NULL { atomic *v += 1 }
//	return 0
func program(mapFD int) asm.Instructions {
	return asm.Instructions{
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.And.Imm(asm.R0, Slots-1),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, mapFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.AddAtomic.Mem(asm.R0, asm.R1, asm.DWord, 0),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// Gen is the count of tgid's slot: it moves whenever a process of that
// slot execs, exits or renames itself.
func (c *Counter) Gen(tgid int32) uint64 {
	i := uint32(tgid) & (Slots - 1)
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&c.mem[i*8])))
}

// Close detaches and unloads everything.
func (c *Counter) Close() error {
	var errs []error
	for _, l := range c.links {
		errs = append(errs, l.Close())
	}
	c.links = nil
	if c.mem != nil {
		errs = append(errs, unix.Munmap(c.mem))
		c.mem = nil
	}
	if c.prog != nil {
		errs = append(errs, c.prog.Close())
	}
	if c.m != nil {
		errs = append(errs, c.m.Close())
	}
	return errors.Join(errs...)
}
