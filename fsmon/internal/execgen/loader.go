package execgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// The exec program also records, per slot, what the new program's
// initial environment tells its dynamic loader (docs/design/deny.md §7):
// LD_PRELOAD=, LD_AUDIT=, LD_LIBRARY_PATH=, and whether the exec was
// secure-exec. It reads the environment at sched_process_exec, after
// the new mm is built and before any of the program's code has run, so
// that the program cannot have rewritten it yet, as it can
// /proc/PID/environ (the live strings in its own memory). The record is
// one 64-bit word, written before the slot's count moves: the tgid of
// the process that exec'd in the low half (so that a reader can tell a
// record of another process of the same slot) and the flags in the high
// half.
//
// The program is plain BPF on a raw tracepoint, no BTF program type: the
// offsets it reads the kernel's structures at come from the kernel's
// BTF (/sys/kernel/btf/vmlinux), read here in user space, and are
// constants in the program.

// Flags of the record; the same bits as fsmon.LoaderEnv.
const (
	flagPreload     = int32(fsmon.LoaderPreload)
	flagAudit       = int32(fsmon.LoaderAudit)
	flagLibraryPath = int32(fsmon.LoaderLibraryPath)
	flagTruncated   = int32(fsmon.LoaderTruncated)
	flagFault       = int32(fsmon.LoaderUnreadable)
	flagSecure      = int32(fsmon.LoaderSecure)
)

// EnvSteps is how many reads of at most envChunk bytes the program makes
// of the environment; a longer environment is flagged truncated (one
// more variable could be past the end). It is unrolled: 256 steps are
// about 9,000 instructions, under the verifier's limits.
const (
	EnvSteps = 256
	envChunk = 64
)

// offsets are where the program finds what it reads.
type offsets struct {
	taskMM                uint32 // task_struct.mm
	mmEnvStart, mmEnvEnd  uint32 // mm_struct.env_start, env_end
	secureByte, secureBit uint32 // linux_binprm.secureexec, a bit field
}

// kernelOffsets reads the offsets from the running kernel's BTF.
func kernelOffsets() (offsets, error) {
	var o offsets
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		// The prefix comparisons and the bit field are little-endian.
		return o, errors.New("loader environment recording is written for little-endian machines")
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return o, fmt.Errorf("reading the kernel's BTF: %w", err)
	}
	for _, f := range []struct {
		typ, field string
		off        *uint32
		bit        *uint32
	}{
		{"task_struct", "mm", &o.taskMM, nil},
		{"mm_struct", "env_start", &o.mmEnvStart, nil},
		{"mm_struct", "env_end", &o.mmEnvEnd, nil},
		{"linux_binprm", "secureexec", &o.secureByte, &o.secureBit},
	} {
		var s *btf.Struct
		if err := spec.TypeByName(f.typ, &s); err != nil {
			return o, fmt.Errorf("kernel BTF: struct %s: %w", f.typ, err)
		}
		bits, ok := member(s.Members, f.field, 0)
		if !ok {
			return o, fmt.Errorf("kernel BTF: struct %s has no %s", f.typ, f.field)
		}
		if f.bit == nil && bits%8 != 0 {
			return o, fmt.Errorf("kernel BTF: %s.%s is not byte-aligned", f.typ, f.field)
		}
		*f.off = uint32(bits / 8)
		if f.bit != nil {
			*f.bit = uint32(bits % 8)
		}
	}
	return o, nil
}

// member finds field among ms, looking into anonymous structs and
// unions (mm_struct keeps env_start in one), and returns its offset in
// bits.
func member(ms []btf.Member, field string, base btf.Bits) (btf.Bits, bool) {
	for _, m := range ms {
		off := base + m.Offset
		if m.Name == field {
			return off, true
		}
		if m.Name != "" {
			continue
		}
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			if r, ok := member(t.Members, field, off); ok {
				return r, true
			}
		case *btf.Union:
			if r, ok := member(t.Members, field, off); ok {
				return r, true
			}
		}
	}
	return 0, false
}

// le is the first 8 bytes of s as a little-endian word.
func le(s string) int64 { return int64(binary.LittleEndian.Uint64([]byte(s))) }

// execProgram is, for sched_process_exec (args: task, old pid, bprm):
//
//	flags = bprm->secureexec ? SECURE : 0
//	mm = current->mm; p, end = mm->env_start, mm->env_end
//	for each of EnvSteps chunks while p < end:
//	    n = bpf_probe_read_user_str(buf, 64, p)   // fault: flags |= FAULT
//	    at the start of a string, compare its prefix with the names
//	    advance by n (a whole string) or by 63 (the string goes on)
//	if p < end after the steps: flags |= TRUNCATED
//	env[slot] = tgid | flags<<32
//	count[slot] += 1
//
// The record is written before the count moves, with the same ordering
// argument as the count itself: whoever sees the new count sees it.
func execProgram(countFD, envFD int, o offsets) asm.Instructions {
	const (
		ptr = -8   // scratch for a pointer read
		end = -16  // env_end
		buf = -128 // one chunk
	)
	in := asm.Instructions{
		asm.Mov.Imm(asm.R9, 0),                     // flags
		asm.LoadMem(asm.R6, asm.R1, 16, asm.DWord), // ctx->args[2]: bprm
		asm.Mov.Reg(asm.R3, asm.R6), asm.Add.Imm(asm.R3, int32(o.secureByte)),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, ptr), asm.Mov.Imm(asm.R2, 1),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.LoadMem(asm.R1, asm.RFP, ptr, asm.Byte),
		asm.RSh.Imm(asm.R1, int32(o.secureBit)),
		asm.And.Imm(asm.R1, 1),
		asm.JEq.Imm(asm.R1, 0, "env"),
		asm.Or.Imm(asm.R9, flagSecure),

		asm.FnGetCurrentTask.Call().WithSymbol("env"),
		asm.Mov.Reg(asm.R3, asm.R0), asm.Add.Imm(asm.R3, int32(o.taskMM)),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, ptr), asm.Mov.Imm(asm.R2, 8),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.LoadMem(asm.R6, asm.RFP, ptr, asm.DWord), // mm
		asm.JEq.Imm(asm.R6, 0, "fail"),
		asm.Mov.Reg(asm.R3, asm.R6), asm.Add.Imm(asm.R3, int32(o.mmEnvEnd)),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, end), asm.Mov.Imm(asm.R2, 8),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.Mov.Reg(asm.R3, asm.R6), asm.Add.Imm(asm.R3, int32(o.mmEnvStart)),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, ptr), asm.Mov.Imm(asm.R2, 8),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.LoadMem(asm.R6, asm.RFP, ptr, asm.DWord), // p
		asm.LoadMem(asm.R7, asm.RFP, end, asm.DWord), // end
		asm.Mov.Imm(asm.R8, 1),                       // p is at the start of a string
	}
	for k := 0; k < EnvSteps; k++ {
		l := func(s string) string { return fmt.Sprintf("%s%d", s, k) }
		in = append(in,
			asm.JGE.Reg(asm.R6, asm.R7, "record"),
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, buf), asm.Mov.Imm(asm.R2, envChunk), asm.Mov.Reg(asm.R3, asm.R6),
			asm.FnProbeReadUserStr.Call(), // bytes read, the NUL included
			asm.JSLE.Imm(asm.R0, 0, "fail"),
			asm.JEq.Imm(asm.R8, 0, l("adv")),
			asm.LoadMem(asm.R1, asm.RFP, buf, asm.DWord),
			// LD_PRELOAD=
			asm.LoadImm(asm.R2, le("LD_PRELO"), asm.DWord),
			asm.JNE.Reg(asm.R1, asm.R2, l("audit")),
			asm.LoadMem(asm.R1, asm.RFP, buf+8, asm.Word),
			asm.And.Imm(asm.R1, 0xffffff),
			asm.JNE.Imm(asm.R1, int32('A'|'D'<<8|'='<<16), l("adv")),
			asm.Or.Imm(asm.R9, flagPreload),
			asm.Ja.Label(l("adv")),
			// LD_AUDIT=
			asm.LoadImm(asm.R2, le("LD_AUDIT"), asm.DWord).WithSymbol(l("audit")),
			asm.JNE.Reg(asm.R1, asm.R2, l("libpath")),
			asm.LoadMem(asm.R1, asm.RFP, buf+8, asm.Byte),
			asm.JNE.Imm(asm.R1, '=', l("adv")),
			asm.Or.Imm(asm.R9, flagAudit),
			asm.Ja.Label(l("adv")),
			// LD_LIBRARY_PATH=
			asm.LoadImm(asm.R2, le("LD_LIBRA"), asm.DWord).WithSymbol(l("libpath")),
			asm.JNE.Reg(asm.R1, asm.R2, l("adv")),
			asm.LoadMem(asm.R1, asm.RFP, buf+8, asm.DWord),
			asm.LoadImm(asm.R2, le("RY_PATH="), asm.DWord),
			asm.JNE.Reg(asm.R1, asm.R2, l("adv")),
			asm.Or.Imm(asm.R9, flagLibraryPath),
			// A whole string read (n < 64): the next one starts after
			// its NUL. Else 63 bytes of it were read and it goes on.
			asm.JGE.Imm(asm.R0, envChunk, l("long")).WithSymbol(l("adv")),
			asm.Add.Reg(asm.R6, asm.R0), asm.Mov.Imm(asm.R8, 1),
			asm.Ja.Label(l("next")),
			asm.Add.Imm(asm.R6, envChunk-1).WithSymbol(l("long")), asm.Mov.Imm(asm.R8, 0),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(l("next")),
		)
	}
	in = append(in,
		asm.JGE.Reg(asm.R6, asm.R7, "record"), // exactly used up
		asm.Or.Imm(asm.R9, flagTruncated),
		asm.Ja.Label("record"),
		asm.Or.Imm(asm.R9, flagFault).WithSymbol("fail"),

		asm.FnGetCurrentPidTgid.Call().WithSymbol("record"),
		asm.RSh.Imm(asm.R0, 32),
		asm.Mov.Reg(asm.R7, asm.R0), // tgid
		asm.And.Imm(asm.R0, Slots-1),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, envFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "count"),
		asm.LSh.Imm(asm.R9, 32),
		asm.Or.Reg(asm.R9, asm.R7),
		asm.StoreMem(asm.R0, 0, asm.R9, asm.DWord),

		asm.LoadMapPtr(asm.R1, countFD).WithSymbol("count"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		increment(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
	return in
}

// Loader is what the last exec of tgid's slot recorded of the loader's
// environment, if that exec was tgid's own; false when the slot's last
// exec was another process's (tgid's own record was overwritten), when
// none was recorded since the counter was loaded (the process started
// before), or when the kernel lacks what recording needs (LoaderErr).
// Read it after the slot's count: an exec after the count was read
// makes the count move.
func (c *Counter) Loader(tgid int32) (fsmon.LoaderEnv, bool) {
	if c.envMem == nil {
		return 0, false
	}
	i := uint32(tgid) & (Slots - 1)
	w := atomic.LoadUint64((*uint64)(unsafe.Pointer(&c.envMem[i*8])))
	if uint32(w) != uint32(tgid) || tgid == 0 {
		return 0, false
	}
	return fsmon.LoaderEnv(w >> 32), true
}

// LoaderErr says why the loader's environment is not recorded; nil when
// it is.
func (c *Counter) LoaderErr() error { return c.envErr }
