package proctrace

import (
	"github.com/cilium/ebpf/asm"
)

// The record the programs write into the ring buffer, little-endian
// words at fixed offsets (decoded by parse). Forks and exits write the
// header only; execs the whole record.
const (
	offKind   = 0  // u32: kindExec, kindFork, kindExit
	offTGID   = 4  // u32: the process (its tgid)
	offPPID   = 8  // u32: its parent's tgid (real_parent)
	offEUID   = 12 // u32: effective uid (the kernel's, as the initial user namespace sees it)
	offEGID   = 16 // u32
	offMntNS  = 20 // u32: the mount namespace's inode number
	offStart  = 24 // u64: task_struct.start_time, ns of CLOCK_MONOTONIC
	offSeq    = 32 // u64: the record's number (Published counts them)
	offIno    = 40 // u64: exec: the inode of the file exec'd (bprm->file)
	offDev    = 48 // u32: exec: its super block's s_dev (the kernel's encoding)
	offArgsN  = 52 // u32: exec: bytes of argv read into the record
	offArgsT  = 56 // u64: exec: bytes of argv in all (arg_end - arg_start); fork: the forking process's tgid (u32)
	offComm   = 64 // [16]byte: comm
	headerLen = 80
	offInterp = 80 // [InterpMax]byte: exec: bprm->interp, NUL-terminated
	offArgs   = offInterp + InterpMax
	execLen   = offArgs + ArgsMax

	// InterpMax bounds the path exec'd, as the kernel knows it.
	InterpMax = 256
	// ArgsMax bounds the command line read at exec; a longer one is
	// reported cut, Truncated set.
	ArgsMax = 4096
)

// rbNoWakeup is BPF_RB_NO_WAKEUP.
const rbNoWakeup = 1

const (
	kindExec = 1
	kindFork = 2
	kindExit = 3
)

// Slots of the counter array.
const (
	slotSeq  = 0 // records written
	slotLost = 1 // records the ring buffer had no room for
)

// emitter builds one program's instructions.
type emitter struct{ in asm.Instructions }

func (e *emitter) add(in ...asm.Instruction) { e.in = append(e.in, in...) }

// read copies size bytes at src+off (kernel memory) to dst+dstOff; on a
// fault the kernel zeroes the destination, so a failed chain of reads
// leaves zeros, never garbage.
func (e *emitter) read(dst asm.Register, dstOff int32, size int32, src asm.Register, off uint32) {
	e.add(
		asm.Mov.Reg(asm.R1, dst), asm.Add.Imm(asm.R1, dstOff),
		asm.Mov.Imm(asm.R2, size),
		asm.Mov.Reg(asm.R3, src), asm.Add.Imm(asm.R3, int32(off)),
		asm.FnProbeReadKernel.Call(),
	)
}

// ptr loads the pointer at src+off into to (0 on a fault), through the
// stack slot at -8.
func (e *emitter) ptr(to, src asm.Register, off uint32) {
	e.read(asm.RFP, -8, 8, src, off)
	e.add(asm.LoadMem(to, asm.RFP, -8, asm.DWord))
}

// reserve reserves n bytes of the ring buffer into R7, or counts the
// record lost and returns.
func (e *emitter) reserve(ringFD, countFD int, n int32) {
	e.add(
		asm.LoadMapPtr(asm.R1, ringFD),
		asm.Mov.Imm(asm.R2, n),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.JNE.Imm(asm.R7, 0, "reserved"),
		// No room: count it.
		asm.StoreImm(asm.RFP, -4, slotLost, asm.Word),
		asm.LoadMapPtr(asm.R1, countFD),
		asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.FetchAdd.Mem(asm.R0, asm.R1, asm.DWord, 0),
		asm.Ja.Label("out"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("reserved"),
	)
}

// task fills the process's facts from the task in R8: parent, effective
// credentials, mount namespace, start time.
func (e *emitter) task(o offsets) {
	e.ptr(asm.R9, asm.R8, o.taskRealParent)
	e.read(asm.R7, offPPID, 4, asm.R9, o.taskTGID)
	e.ptr(asm.R9, asm.R8, o.taskCred)
	e.read(asm.R7, offEUID, 4, asm.R9, o.credEUID)
	e.read(asm.R7, offEGID, 4, asm.R9, o.credEGID)
	e.ptr(asm.R9, asm.R8, o.taskNsproxy)
	e.ptr(asm.R9, asm.R9, o.nsproxyMnt)
	e.read(asm.R7, offMntNS, 4, asm.R9, o.mntNSInum)
	e.read(asm.R7, offStart, 8, asm.R8, o.taskStart)
}

// submit numbers the record in R7 (after every other write, so that a
// reader that has counted it has all of it) and hands it to user space
// without waking the reader (BPF_RB_NO_WAKEUP): a wakeup per exec, fork
// and exit would cost every exec a context switch. The reader polls,
// and is woken when a change needs the records (Tracer.Wake).
func (e *emitter) submit(countFD int) {
	e.add(
		// StoreImm has no 64-bit form: two words.
		asm.StoreImm(asm.R7, offSeq, 0, asm.Word),
		asm.StoreImm(asm.R7, offSeq+4, 0, asm.Word),
		asm.StoreImm(asm.RFP, -4, slotSeq, asm.Word),
		asm.LoadMapPtr(asm.R1, countFD),
		asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "submit"),
		asm.Mov.Imm(asm.R1, 1),
		asm.FetchAdd.Mem(asm.R0, asm.R1, asm.DWord, 0), // R1: the count before
		asm.StoreMem(asm.R7, offSeq, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R7).WithSymbol("submit"),
		asm.Mov.Imm(asm.R2, rbNoWakeup),
		asm.FnRingbufSubmit.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

// zero clears n bytes of the record from off (a multiple of 4).
func (e *emitter) zero(off, n int16) {
	for i := off; i < off+n; i += 4 {
		e.add(asm.StoreImm(asm.R7, i, 0, asm.Word))
	}
}

// execProgram is, for sched_process_exec (args: task, old pid, bprm),
// run in the process after its new mm is built and before any of the
// new program runs:
//
//	rec = reserve(execLen)          // none: lost += 1
//	rec.tgid, comm = current's; parent, creds, mnt ns, start = task's
//	rec.ino, dev = bprm->file's inode; rec.interp = bprm->interp
//	n = min(mm->arg_end - mm->arg_start, ArgsMax)
//	rec.args = probe_read_user(mm->arg_start, n)
//	rec.seq = seq++; submit(rec)
func execProgram(ringFD, countFD int, o offsets) asm.Instructions {
	var e emitter
	e.add(asm.LoadMem(asm.R6, asm.R1, 16, asm.DWord)) // ctx->args[2]: bprm
	e.reserve(ringFD, countFD, execLen)
	e.add(
		asm.StoreImm(asm.R7, offKind, kindExec, asm.Word),
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.StoreMem(asm.R7, offTGID, asm.R0, asm.Word),
		asm.FnGetCurrentTask.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
	)
	e.task(o)
	e.ptr(asm.R9, asm.R6, o.bprmFile)
	e.ptr(asm.R9, asm.R9, o.fileInode)
	e.read(asm.R7, offIno, 8, asm.R9, o.inodeIno)
	e.ptr(asm.R9, asm.R9, o.inodeSB)
	e.read(asm.R7, offDev, 4, asm.R9, o.sbDev)
	e.add(
		asm.Mov.Reg(asm.R1, asm.R7), asm.Add.Imm(asm.R1, offComm),
		asm.Mov.Imm(asm.R2, 16),
		asm.FnGetCurrentComm.Call(),
	)
	e.ptr(asm.R3, asm.R6, o.bprmInterp)
	e.add(
		asm.Mov.Reg(asm.R1, asm.R7), asm.Add.Imm(asm.R1, offInterp),
		asm.Mov.Imm(asm.R2, InterpMax),
		asm.FnProbeReadKernelStr.Call(),
	)
	// The arguments, from the new mm: what the program was started
	// with, before it can rewrite them.
	e.ptr(asm.R9, asm.R8, o.taskMM)
	e.ptr(asm.R6, asm.R9, o.mmArgStart)
	e.read(asm.RFP, -16, 8, asm.R9, o.mmArgEnd)
	e.add(
		asm.LoadMem(asm.R2, asm.RFP, -16, asm.DWord),
		asm.Sub.Reg(asm.R2, asm.R6),
		asm.StoreMem(asm.R7, offArgsT, asm.R2, asm.DWord),
		asm.JLE.Imm(asm.R2, ArgsMax, "argsok"),
		asm.Mov.Imm(asm.R2, ArgsMax),
		asm.Mov.Reg(asm.R9, asm.R2).WithSymbol("argsok"),
		asm.Mov.Reg(asm.R1, asm.R7), asm.Add.Imm(asm.R1, offArgs),
		asm.Mov.Reg(asm.R3, asm.R6),
		asm.FnProbeReadUser.Call(),
		asm.JEq.Imm(asm.R0, 0, "argsread"),
		asm.Mov.Imm(asm.R9, 0),
		asm.StoreMem(asm.R7, offArgsN, asm.R9, asm.Word).WithSymbol("argsread"),
	)
	e.submit(countFD)
	return e.in
}

// forkProgram is, for sched_process_fork (args: parent, child), run in
// the parent before the child first runs: a record for a new process
// (not a thread), whose program is the forking process's.
func forkProgram(ringFD, countFD int, o offsets) asm.Instructions {
	var e emitter
	e.add(asm.LoadMem(asm.R8, asm.R1, 8, asm.DWord)) // ctx->args[1]: child
	e.read(asm.RFP, -16, 4, asm.R8, o.taskPID)
	e.read(asm.RFP, -24, 4, asm.R8, o.taskTGID)
	e.add(
		asm.LoadMem(asm.R1, asm.RFP, -16, asm.Word),
		asm.LoadMem(asm.R6, asm.RFP, -24, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R6, "out"), // a thread
	)
	e.reserve(ringFD, countFD, headerLen)
	e.add(
		asm.StoreImm(asm.R7, offKind, kindFork, asm.Word),
		asm.StoreMem(asm.R7, offTGID, asm.R6, asm.Word),
	)
	e.zero(offIno, offComm-offIno)
	e.add(
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.StoreMem(asm.R7, offArgsT, asm.R0, asm.Word),
	)
	e.task(o)
	e.add(
		asm.Mov.Reg(asm.R1, asm.R7), asm.Add.Imm(asm.R1, offComm),
		asm.Mov.Imm(asm.R2, 16),
		asm.FnGetCurrentComm.Call(),
	)
	e.submit(countFD)
	return e.in
}

// exitProgram is, for sched_process_exit (args: task, and since Linux
// 6.16 group_dead), run in the exiting thread: a record when the whole
// process ends.
func exitProgram(ringFD, countFD int, o offsets) asm.Instructions {
	var e emitter
	if o.exitGroupDead {
		e.add(
			asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord), // ctx->args[1]: group_dead
			asm.And.Imm(asm.R2, 0xff),
			asm.JEq.Imm(asm.R2, 0, "out"),
		)
	} else {
		e.add(
			asm.FnGetCurrentPidTgid.Call(),
			asm.Mov.Reg(asm.R1, asm.R0),
			asm.RSh.Imm(asm.R1, 32),
			asm.LSh.Imm(asm.R0, 32), asm.RSh.Imm(asm.R0, 32),
			asm.JNE.Reg(asm.R0, asm.R1, "out"), // not the leader
		)
	}
	e.reserve(ringFD, countFD, headerLen)
	e.zero(0, headerLen)
	e.add(
		asm.StoreImm(asm.R7, offKind, kindExit, asm.Word),
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.StoreMem(asm.R7, offTGID, asm.R0, asm.Word),
	)
	e.leaderStart(o)
	e.submit(countFD)
	return e.in
}

// leaderStart records the start time of the current process: its
// thread group leader's, since the thread that exits last need not be
// the leader (a Go program's exit_group may end on any thread), and a
// thread's own start time is not the process's.
func (e *emitter) leaderStart(o offsets) {
	e.add(
		asm.FnGetCurrentTask.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
	)
	e.ptr(asm.R8, asm.R8, o.taskLeader)
	e.read(asm.R7, offStart, 8, asm.R8, o.taskStart)
}
