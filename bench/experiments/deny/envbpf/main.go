package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

const slots = 1 << 16
const steps = 256

func off(spec *btf.Spec, typ, field string) uint32 {
	var s *btf.Struct
	if err := spec.TypeByName(typ, &s); err != nil {
		panic(err)
	}
	o, ok := find(s.Members, field, 0)
	if !ok {
		panic("no field " + typ + "." + field)
	}
	return o
}

func find(ms []btf.Member, field string, base uint32) (uint32, bool) {
	for _, m := range ms {
		o := base + uint32(m.Offset)/8
		if m.Name == field {
			return o, true
		}
		if m.Name == "" {
			switch t := btf.UnderlyingType(m.Type).(type) {
			case *btf.Struct:
				if r, ok := find(t.Members, field, o); ok {
					return r, true
				}
			case *btf.Union:
				if r, ok := find(t.Members, field, o); ok {
					return r, true
				}
			}
		}
	}
	return 0, false
}

func le(s string) int64 { return int64(binary.LittleEndian.Uint64([]byte(s))) }

type ids struct {
	bprmFile, fileInode, inodeIno, inodeGen, inodeSb, sbDev, secByte uint32
	secBit                                                           uint32
}

func identity(idFD int, o ids) asm.Instructions {
	rd := func(dst int16, src asm.Register, off uint32, size int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R3, src), asm.Add.Imm(asm.R3, int32(off)),
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, int32(dst)), asm.Mov.Imm(asm.R2, size),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, "idout"),
		}
	}
	in := asm.Instructions{
		// value layout at fp-64: dev(8) ino(8) gen(8) secure(8)
		asm.Mov.Imm(asm.R2, 0), asm.StoreMem(asm.RFP, -64, asm.R2, asm.DWord), asm.StoreMem(asm.RFP, -56, asm.R2, asm.DWord), asm.StoreMem(asm.RFP, -48, asm.R2, asm.DWord), asm.StoreMem(asm.RFP, -40, asm.R2, asm.DWord),
		asm.LoadMem(asm.R6, asm.R1, 16, asm.DWord), // args[2] = bprm
	}
	in = append(in, rd(-40, asm.R6, o.secByte, 1)...)
	in = append(in, rd(-8, asm.R6, o.bprmFile, 8)...)
	in = append(in, asm.LoadMem(asm.R7, asm.RFP, -8, asm.DWord))
	in = append(in, rd(-8, asm.R7, o.fileInode, 8)...)
	in = append(in, asm.LoadMem(asm.R7, asm.RFP, -8, asm.DWord))
	in = append(in, rd(-56, asm.R7, o.inodeIno, 8)...)
	in = append(in, rd(-48, asm.R7, o.inodeGen, 4)...)
	in = append(in, rd(-8, asm.R7, o.inodeSb, 8)...)
	in = append(in, asm.LoadMem(asm.R7, asm.RFP, -8, asm.DWord))
	in = append(in, rd(-64, asm.R7, o.sbDev, 4)...)
	in = append(in,
		asm.LoadMem(asm.R1, asm.RFP, -40, asm.DWord), asm.RSh.Imm(asm.R1, int32(o.secBit)), asm.And.Imm(asm.R1, 1), asm.StoreMem(asm.RFP, -40, asm.R1, asm.DWord),
		asm.FnGetCurrentPidTgid.Call(), asm.RSh.Imm(asm.R0, 32), asm.And.Imm(asm.R0, slots-1), asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, idFD), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4), asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -64), asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("idout"), asm.Return(),
	)
	return in
}

func program(mapFD int, offMM, offES, offEE uint32) asm.Instructions {
	in := asm.Instructions{
		asm.Mov.Imm(asm.R9, 0),
		asm.FnGetCurrentTask.Call(),
		asm.Mov.Reg(asm.R3, asm.R0), asm.Add.Imm(asm.R3, int32(offMM)),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -8), asm.Mov.Imm(asm.R2, 8),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.LoadMem(asm.R6, asm.RFP, -8, asm.DWord), // mm
		asm.JEq.Imm(asm.R6, 0, "fail"),
		asm.Mov.Reg(asm.R3, asm.R6), asm.Add.Imm(asm.R3, int32(offEE)),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -16), asm.Mov.Imm(asm.R2, 8),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.Mov.Reg(asm.R3, asm.R6), asm.Add.Imm(asm.R3, int32(offES)),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -8), asm.Mov.Imm(asm.R2, 8),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.LoadMem(asm.R6, asm.RFP, -8, asm.DWord),  // p = env_start
		asm.LoadMem(asm.R7, asm.RFP, -16, asm.DWord), // env_end
		asm.Mov.Imm(asm.R8, 1),                       // at the start of a string
	}
	const buf = -128
	for k := 0; k < steps; k++ {
		l := func(s string) string { return fmt.Sprintf("%s%d", s, k) }
		in = append(in,
			asm.JGE.Reg(asm.R6, asm.R7, "done"),
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, buf), asm.Mov.Imm(asm.R2, 64), asm.Mov.Reg(asm.R3, asm.R6),
			asm.FnProbeReadUserStr.Call(),
			asm.JSLE.Imm(asm.R0, 0, "fail"),
			asm.JEq.Imm(asm.R8, 0, l("adv")),
			asm.LoadMem(asm.R1, asm.RFP, buf, asm.DWord),
			asm.LoadImm(asm.R2, le("LD_PRELO"), asm.DWord),
			asm.JNE.Reg(asm.R1, asm.R2, l("c2")),
			asm.LoadMem(asm.R1, asm.RFP, buf+8, asm.Word),
			asm.And.Imm(asm.R1, 0xffffff),
			asm.JNE.Imm(asm.R1, int32('A'|'D'<<8|'='<<16), l("adv")),
			asm.Or.Imm(asm.R9, 1),
			asm.Ja.Label(l("adv")),
			asm.LoadImm(asm.R2, le("LD_AUDIT"), asm.DWord).WithSymbol(l("c2")),
			asm.JNE.Reg(asm.R1, asm.R2, l("c3")),
			asm.LoadMem(asm.R1, asm.RFP, buf+8, asm.Byte),
			asm.JNE.Imm(asm.R1, '=', l("adv")),
			asm.Or.Imm(asm.R9, 2),
			asm.Ja.Label(l("adv")),
			asm.LoadImm(asm.R2, le("LD_LIBRA"), asm.DWord).WithSymbol(l("c3")),
			asm.JNE.Reg(asm.R1, asm.R2, l("adv")),
			asm.LoadMem(asm.R1, asm.RFP, buf+8, asm.DWord),
			asm.LoadImm(asm.R2, le("RY_PATH="), asm.DWord),
			asm.JNE.Reg(asm.R1, asm.R2, l("adv")),
			asm.Or.Imm(asm.R9, 4),
			asm.JGE.Imm(asm.R0, 64, l("long")).WithSymbol(l("adv")),
			asm.Add.Reg(asm.R6, asm.R0), asm.Mov.Imm(asm.R8, 1),
			asm.Ja.Label(l("next")),
			asm.Add.Imm(asm.R6, 63).WithSymbol(l("long")), asm.Mov.Imm(asm.R8, 0),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(l("next")),
		)
	}
	in = append(in,
		asm.Or.Imm(asm.R9, 8), // not all of it scanned
		asm.Ja.Label("done"),
		asm.Or.Imm(asm.R9, 16).WithSymbol("fail"),
		asm.FnGetCurrentPidTgid.Call().WithSymbol("done"),
		asm.RSh.Imm(asm.R0, 32),
		asm.And.Imm(asm.R0, slots-1),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, mapFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.StoreMem(asm.R0, 0, asm.R9, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
	return in
}

func main() {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		panic(err)
	}
	offMM, offES, offEE := off(spec, "task_struct", "mm"), off(spec, "mm_struct", "env_start"), off(spec, "mm_struct", "env_end")
	fmt.Printf("offsets from /sys/kernel/btf/vmlinux: task_struct.mm=%d mm_struct.env_start=%d env_end=%d\n", offMM, offES, offEE)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: slots})
	if err != nil {
		panic(err)
	}
	ins := program(m.FD(), offMM, offES, offEE)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "envflags", Type: ebpf.RawTracepoint, Instructions: ins, License: "GPL"})
	if err != nil {
		fmt.Println("load:", err)
		os.Exit(1)
	}
	fmt.Printf("program: %d instructions, loaded as raw tracepoint\n", len(ins))
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: prog})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	var bp *btf.Struct
	spec.TypeByName("linux_binprm", &bp)
	var o ids
	for _, m := range bp.Members {
		if m.Name == "secureexec" {
			o.secByte, o.secBit = uint32(m.Offset)/8, uint32(m.Offset)%8
		}
	}
	o.bprmFile, o.fileInode, o.inodeIno, o.inodeGen, o.inodeSb, o.sbDev = off(spec, "linux_binprm", "file"), off(spec, "file", "f_inode"), off(spec, "inode", "i_ino"), off(spec, "inode", "i_generation"), off(spec, "inode", "i_sb"), off(spec, "super_block", "s_dev")
	idm, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 32, MaxEntries: slots})
	if err != nil {
		panic(err)
	}
	idp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "exeid", Type: ebpf.RawTracepoint, Instructions: identity(idm.FD(), o), License: "GPL"})
	if err != nil {
		fmt.Println("load identity program:", err)
		os.Exit(1)
	}
	l2, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: idp})
	if err != nil {
		panic(err)
	}
	defer l2.Close()
	fmt.Printf("identity program loaded (secureexec at byte %d bit %d)\n", o.secByte, o.secBit)
	idOf := func(pid int) {
		var v [4]uint64
		if err := idm.Lookup(uint32(pid)&(slots-1), &v); err != nil {
			panic(err)
		}
		fmt.Printf("    recorded at exec: s_dev=%d:%d ino=%d generation=%#x secureexec=%d\n", v[0]>>20, v[0]&0xfffff, v[1], v[2], v[3])
	}
	c := exec.Command("/bin/sleep", "0.3")
	c.Start()
	time.Sleep(100 * time.Millisecond)
	var st unix.Stat_t
	unix.Stat(fmt.Sprintf("/proc/%d/exe", c.Process.Pid), &st)
	fmt.Printf("  /bin/sleep: stat(/proc/PID/exe) dev=%d:%d ino=%d\n", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	idOf(c.Process.Pid)
	c.Wait()
	c = exec.Command("/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/su", "-c", "true")
	c.Run()
	fmt.Printf("  su (setuid):\n")
	idOf(c.Process.Pid)
	if sc, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
		defer sc.Close()
	} else {
		fmt.Println("stats:", err)
	}
	run := func(desc string, env []string, args ...string) {
		c := exec.Command(pick(args)[0], pick(args)[1:]...)
		c.Env = env
		if err := c.Run(); err != nil {
			fmt.Println("  run:", err)
		}
		var v uint64
		if err := m.Lookup(uint32(c.Process.Pid)&(slots-1), &v); err != nil {
			panic(err)
		}
		fmt.Printf("  %-58s flags=%05b (1 PRELOAD, 2 AUDIT, 4 LIBRARY_PATH, 8 truncated, 16 fault)\n", desc, v)
	}
	run("env -i /bin/true", []string{})
	run("PATH=... HOME=... /bin/true", []string{"PATH=/usr/bin", "HOME=/root"})
	run("LD_PRELOAD=/nonexistent.so /bin/true", []string{"A=1", "LD_PRELOAD=/nonexistent.so"})
	run("LD_AUDIT=x /bin/true", []string{"LD_AUDIT=x"})
	run("LD_LIBRARY_PATH=/tmp /bin/true (after a 200-byte var)", []string{"X=" + strings.Repeat("y", 200), "LD_LIBRARY_PATH=/tmp"})
	run("LD_PRELOADX=1 LD_PRELOAD (no =) LD_AUDITOR=1", []string{"LD_PRELOADX=1", "LD_PRELOAD", "LD_AUDITOR=1"})
	run("X=LD_PRELOAD=/x.so (value, not a name)", []string{"X=LD_PRELOAD=/x.so"})
	run("300 vars then LD_PRELOAD", append(manyVars(300), "LD_PRELOAD=/x.so"))
	run("100 vars of 100 bytes then LD_PRELOAD", append(bigVars(100, 100), "LD_PRELOAD=/x.so"))
	// a script: exec'd twice (sh then the interpreter)
	os.WriteFile("/tmp/i13/envbpf/s.sh", []byte("#!/bin/sh\nexit 0\n"), 0755)
	run("LD_PRELOAD=/x.so /tmp/i13/envbpf/s.sh (script)", []string{"LD_PRELOAD=/x.so"}, "/tmp/i13/envbpf/s.sh")
	for i := 0; i < 200; i++ {
		exec.Command("/bin/true").Run()
	}
	pst, _ := prog.Stats()
	if pst != nil {
		st := pst
		fmt.Printf("program runs=%d total=%v mean=%v per exec\n", st.RunCount, st.Runtime, st.Runtime/ /**/ timeDiv(st.RunCount))
	}
}

func manyVars(n int) []string {
	var s []string
	for i := 0; i < n; i++ {
		s = append(s, fmt.Sprintf("V%d=1", i))
	}
	return s
}
func bigVars(n, size int) []string {
	var s []string
	for i := 0; i < n; i++ {
		s = append(s, fmt.Sprintf("V%d=%s", i, strings.Repeat("z", size)))
	}
	return s
}

func timeDiv(n uint64) time.Duration {
	if n == 0 {
		return 1
	}
	return time.Duration(n)
}

func pick(a []string) []string {
	if len(a) == 0 {
		return []string{"/bin/true"}
	}
	return a
}
