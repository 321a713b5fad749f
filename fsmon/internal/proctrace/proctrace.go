// Package proctrace tells the daemon about every exec, fork and exit on
// the machine as it happens: three small BPF programs on the raw
// tracepoints sched_process_exec, sched_process_fork and
// sched_process_exit write a record of each into a BPF ring buffer,
// which Read hands to one goroutine. An exec's record has what the
// kernel knows at that moment: the process and its parent, its
// effective uid and gid, its mount namespace, its name, the path exec'd
// (bprm->interp, the interpreter for a script, as /proc/PID/exe would
// say), the exec'd file's inode, and the command line read from the new
// program's memory before any of its code ran. So a process that writes
// a file and exits at once is still known when its change is read.
//
// The programs are plain BPF written with cilium/ebpf's assembler (no C
// compiler); the offsets of the kernel structures they read come from
// the kernel's BTF (offsets.go). See docs/design/process.md.
package proctrace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// RingSize is the ring buffer's size: room for about 900 execs that the
// reader has not read yet.
const RingSize = 4 << 20

// Kind is what happened to a process.
type Kind uint8

const (
	Exec Kind = kindExec // it started another program
	Fork Kind = kindFork // it was made (a new process, not a thread)
	Exit Kind = kindExit // its last thread exited
)

func (k Kind) String() string {
	switch k {
	case Exec:
		return "exec"
	case Fork:
		return "fork"
	case Exit:
		return "exit"
	}
	return "unknown"
}

// Record is one exec, fork or exit, as the kernel knew it then.
type Record struct {
	Kind Kind
	PID  int32 // the process's tgid, in the initial PID namespace
	// PPID is the parent's tgid (exec, fork).
	PPID int32
	// Forker is, at a fork, the process that forked (the parent, unless
	// CLONE_PARENT made the forker's parent the child's).
	Forker     int32
	EUID, EGID uint32
	// MntNS is the inode number of the process's mount namespace.
	MntNS uint32
	// Start is the task's start time, ns of CLOCK_MONOTONIC: with PID,
	// the process's identity.
	Start uint64
	Seq   uint64
	// Exec only: the file exec'd (its device, as stat(2) gives it, and
	// inode), the path exec'd as the kernel had it (a script's
	// interpreter), and the argument bytes, NUL-separated.
	Dev  uint64
	Ino  uint64
	Path string
	Args []byte
	// Truncated: the arguments were longer than ArgsMax.
	Truncated bool
	Comm      string
}

// Tracer is the loaded programs, their ring buffer and its reader.
type Tracer struct {
	ring   *ebpf.Map
	counts *ebpf.Map
	mem    []byte // counts, mapped
	progs  []*ebpf.Program
	links  []link.Link
	rd     *ringbuf.Reader
	rec    ringbuf.Record
	// draining: the last Read returned a record, so the deadline set
	// before it still holds for the rest of the batch.
	draining bool
}

// Open loads and attaches the programs. It needs CAP_BPF and
// CAP_PERFMON (root), a kernel with BTF, BPF ring buffers (Linux 5.8)
// and atomic fetch instructions (Linux 5.12).
func Open() (_ *Tracer, err error) {
	o, err := kernelOffsets()
	if err != nil {
		return nil, err
	}
	t := &Tracer{}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK for BPF: %w", err)
	}
	t.ring, err = ebpf.NewMap(&ebpf.MapSpec{Name: "fsmon_procs", Type: ebpf.RingBuf, MaxEntries: RingSize})
	if err != nil {
		return nil, fmt.Errorf("creating the process ring buffer: %w", err)
	}
	t.counts, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "fsmon_proccnt", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2,
		Flags: unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the process record counters: %w", err)
	}
	t.mem, err = unix.Mmap(t.counts.FD(), 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the process record counters: %w", err)
	}
	for _, p := range []struct {
		name, tp string
		in       func(int, int, offsets) asm.Instructions
	}{
		{"fsmon_pexec", "sched_process_exec", execProgram},
		{"fsmon_pfork", "sched_process_fork", forkProgram},
		{"fsmon_pexit", "sched_process_exit", exitProgram},
	} {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name:         p.name,
			Type:         ebpf.RawTracepoint,
			Instructions: p.in(t.ring.FD(), t.counts.FD(), o),
			License:      "Dual MIT/GPL",
		})
		if err != nil {
			return nil, fmt.Errorf("loading the %s program: %w", p.tp, err)
		}
		t.progs = append(t.progs, prog)
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.tp, Program: prog})
		if err != nil {
			return nil, fmt.Errorf("attaching to raw tracepoint %s: %w", p.tp, err)
		}
		t.links = append(t.links, l)
	}
	t.rd, err = ringbuf.NewReader(t.ring)
	if err != nil {
		return nil, fmt.Errorf("reading the process ring buffer: %w", err)
	}
	return t, nil
}

// ErrClosed is what Read returns once the tracer is closed.
var ErrClosed = os.ErrClosed

// ErrNone says Read found no record before its poll ended (or Wake).
var ErrNone = errors.New("no process record")

// PollEvery is how long Read waits for records: the programs do not
// wake the reader, so it looks every PollEvery, or when woken (Wake).
const PollEvery = 20 * time.Millisecond

// Read fills r with the next record, waiting at most PollEvery (ErrNone
// then); r.Args is valid until the next Read. One goroutine reads.
func (t *Tracer) Read(r *Record) error {
	if !t.draining {
		t.rd.SetDeadline(time.Now().Add(PollEvery))
	}
	if err := t.rd.ReadInto(&t.rec); err != nil {
		t.draining = false
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrFlushed) {
			return ErrNone
		}
		if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
			return ErrClosed
		}
		return fmt.Errorf("reading the process ring buffer: %w", err)
	}
	// The rest of what is there is read without a new deadline.
	t.draining = true
	return parse(t.rec.RawSample, r)
}

// Wake makes a Read that waits look at the ring buffer now.
func (t *Tracer) Wake() error { return t.rd.Flush() }

// ErrShort says a record was shorter than its kind needs.
var ErrShort = errors.New("process record too short")

func parse(b []byte, r *Record) error {
	if len(b) < headerLen {
		return fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	le := binary.LittleEndian
	*r = Record{
		Kind:  Kind(le.Uint32(b[offKind:])),
		PID:   int32(le.Uint32(b[offTGID:])),
		PPID:  int32(le.Uint32(b[offPPID:])),
		EUID:  le.Uint32(b[offEUID:]),
		EGID:  le.Uint32(b[offEGID:]),
		MntNS: le.Uint32(b[offMntNS:]),
		Start: le.Uint64(b[offStart:]),
		Seq:   le.Uint64(b[offSeq:]),
		Comm:  cstring(b[offComm : offComm+16]),
	}
	switch r.Kind {
	case Fork:
		r.Forker = int32(le.Uint32(b[offArgsT:]))
	case Exec:
		if len(b) < execLen {
			return fmt.Errorf("%w: exec record of %d bytes", ErrShort, len(b))
		}
		r.Ino = le.Uint64(b[offIno:])
		// The kernel's dev_t (major << 20 | minor), as stat(2) encodes it.
		kdev := le.Uint32(b[offDev:])
		r.Dev = unix.Mkdev(kdev>>20, kdev&(1<<20-1))
		r.Path = cstring(b[offInterp : offInterp+InterpMax])
		n := min(int(le.Uint32(b[offArgsN:])), ArgsMax)
		r.Args = b[offArgs : offArgs+n]
		r.Truncated = le.Uint64(b[offArgsT:]) > ArgsMax
	}
	return nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func (t *Tracer) count(slot int) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&t.mem[slot*8])))
}

// Published is how many records the programs have written so far: a
// reader that has read that many has every exec, fork and exit that
// happened before the call.
func (t *Tracer) Published() uint64 { return t.count(slotSeq) }

// Lost is how many records found the ring buffer full.
func (t *Tracer) Lost() uint64 { return t.count(slotLost) }

// Skipped is how many times the kernel skipped one of the programs (a
// tracepoint hit while one was running on the same CPU): a record not
// written and not counted as lost. It needs Linux 5.12.
func (t *Tracer) Skipped() uint64 {
	var n uint64
	for _, p := range t.progs {
		if st, err := p.Stats(); err == nil {
			n += st.RecursionMisses
		}
	}
	return n
}

// Close detaches the programs and ends a Read that waits; nothing else
// may be called after it.
func (t *Tracer) Close() error {
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	if t.rd != nil {
		errs = append(errs, t.rd.Close())
	}
	for _, p := range t.progs {
		errs = append(errs, p.Close())
	}
	t.progs = nil
	if t.mem != nil {
		errs = append(errs, unix.Munmap(t.mem))
		t.mem = nil
	}
	if t.counts != nil {
		errs = append(errs, t.counts.Close())
	}
	if t.ring != nil {
		errs = append(errs, t.ring.Close())
	}
	return errors.Join(errs...)
}
