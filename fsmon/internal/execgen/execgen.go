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
//
// At exec the program also records what the new program's initial
// environment tells its dynamic loader (LD_PRELOAD and the like; see
// loader.go), in a second mapped array, before the count moves.
package execgen

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Slots is the number of counters; a power of two.
const Slots = 1 << 16

// Tracepoints are the raw tracepoints the program is attached to: where
// a process starts running another program, ends, or takes another name.
var Tracepoints = []string{"sched_process_exec", "sched_process_exit", "task_rename"}

// Counter is the loaded programs and their mapped arrays.
type Counter struct {
	m     *ebpf.Map
	prog  *ebpf.Program // counts exits and renames (and execs without env)
	links []link.Link
	mem   []byte

	// env, execProg and envMem record the loader's environment at exec
	// (loader.go); nil where the kernel's BTF is missing (envErr says
	// why), and execs are then counted by prog.
	env      *ebpf.Map
	execProg *ebpf.Program
	envMem   []byte
	envErr   error
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
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK for BPF: %w", err)
	}
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
	if err := c.openEnv(); err != nil {
		c.envErr = err
	}
	for _, tp := range Tracepoints {
		prog := c.prog
		if tp == "sched_process_exec" && c.execProg != nil {
			prog = c.execProg
		}
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: prog})
		if err != nil {
			return nil, fmt.Errorf("attaching to raw tracepoint %s: %w", tp, err)
		}
		c.links = append(c.links, l)
	}
	c.mem, err = unix.Mmap(c.m.FD(), 0, Slots*8, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the exec counter array: %w", err)
	}
	if err := c.selfTest(); err != nil {
		return nil, err
	}
	return c, nil
}

// openEnv loads the exec program that also records the loader's
// environment, and maps its array. Without it (no kernel BTF, an older
// verifier) execs are still counted, by the plain program.
func (c *Counter) openEnv() (err error) {
	o, err := kernelOffsets()
	if err != nil {
		return err
	}
	env, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "fsmon_execenv",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: Slots,
		Flags:      unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		return fmt.Errorf("creating the loader environment array: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "fsmon_exec",
		Type:         ebpf.RawTracepoint,
		Instructions: execProgram(c.m.FD(), env.FD(), o),
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		env.Close()
		return fmt.Errorf("loading the exec program that records the loader's environment: %w", err)
	}
	mem, err := unix.Mmap(env.FD(), 0, Slots*8, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		prog.Close()
		env.Close()
		return fmt.Errorf("mapping the loader environment array: %w", err)
	}
	c.env, c.execProg, c.envMem = env, prog, mem
	return nil
}

// selfTest renames the calling thread (to the name it has) and checks
// that the slot of this process, numbered as this process sees pids,
// moved. It fails where the kernel's numbering is not ours: the program
// keys by the initial PID namespace's tgid, and fanotify reports pids as
// the daemon's namespace sees them.
func (c *Counter) selfTest() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var name [16]byte
	if err := unix.Prctl(unix.PR_GET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
		return fmt.Errorf("PR_GET_NAME: %w", err)
	}
	self := int32(unix.Getpid())
	for try := 0; try < 3; try++ {
		g := c.Gen(self)
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
			return fmt.Errorf("PR_SET_NAME: %w", err)
		}
		if c.Gen(self) == g {
			return fmt.Errorf("a rename of the daemon's own thread was not counted under pid %d: not in the initial PID namespace?", self)
		}
	}
	return nil
}

// Skipped is how many times the kernel skipped the program (a tracepoint
// hit while the program was running on the same CPU), each an exec,
// exit or rename possibly not counted. It needs Linux 5.12.
func (c *Counter) Skipped() (uint64, error) {
	st, err := c.prog.Stats()
	if err != nil {
		return 0, fmt.Errorf("reading the exec counter program's statistics: %w", err)
	}
	n := st.RecursionMisses
	if c.execProg != nil {
		st, err := c.execProg.Stats()
		if err != nil {
			return 0, fmt.Errorf("reading the exec program's statistics: %w", err)
		}
		n += st.RecursionMisses
	}
	return n, nil
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
		increment(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// increment adds R1 to the count R0 points to, fully ordered, so that
// whoever sees the new count also sees what the task wrote before it
// (PF_EXITING, at an exit). On amd64 the plain atomic add is a locked
// instruction, a full barrier, and loads on any kernel with mmap-able
// arrays; elsewhere it takes the fetch form (Linux 5.12), whose JITs
// emit fully ordered instructions.
func increment() asm.Instruction {
	if runtime.GOARCH == "amd64" {
		return asm.AddAtomic.Mem(asm.R0, asm.R1, asm.DWord, 0)
	}
	return asm.FetchAdd.Mem(asm.R0, asm.R1, asm.DWord, 0)
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
	if c.envMem != nil {
		errs = append(errs, unix.Munmap(c.envMem))
		c.envMem = nil
	}
	if c.execProg != nil {
		errs = append(errs, c.execProg.Close())
	}
	if c.env != nil {
		errs = append(errs, c.env.Close())
	}
	if c.prog != nil {
		errs = append(errs, c.prog.Close())
	}
	if c.m != nil {
		errs = append(errs, c.m.Close())
	}
	return errors.Join(errs...)
}
