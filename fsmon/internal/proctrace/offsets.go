package proctrace

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// offsets are where the programs find what they read in the kernel's
// structures, in bytes, read from the running kernel's BTF
// (/sys/kernel/btf/vmlinux) in user space and written into the programs
// as constants: plain BPF on raw tracepoints, no BTF-typed program
// (fentry and LSM programs do not load on every kernel that has BTF;
// docs/design/process.md).
type offsets struct {
	taskPID, taskTGID    uint32 // task_struct.pid, tgid
	taskRealParent       uint32 // task_struct.real_parent
	taskCred             uint32 // task_struct.cred (the effective credentials)
	taskStart            uint32 // task_struct.start_time
	taskLeader           uint32 // task_struct.group_leader
	taskNsproxy          uint32 // task_struct.nsproxy
	taskMM               uint32 // task_struct.mm
	credEUID, credEGID   uint32 // cred.euid, egid
	nsproxyMnt           uint32 // nsproxy.mnt_ns
	mntNSInum            uint32 // mnt_namespace.ns.inum
	mmArgStart, mmArgEnd uint32 // mm_struct.arg_start, arg_end
	bprmFile, bprmInterp uint32 // linux_binprm.file, interp
	fileInode            uint32 // file.f_inode
	inodeIno, inodeSB    uint32 // inode.i_ino, i_sb
	sbDev                uint32 // super_block.s_dev
	// exitGroupDead: sched_process_exit has the group_dead argument
	// (Linux 6.16): the last thread of the process is exiting. Without
	// it the exit of the thread group leader stands for the process's.
	exitGroupDead bool
}

// kernelOffsets reads the offsets from the running kernel's BTF.
func kernelOffsets() (offsets, error) {
	var o offsets
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return o, fmt.Errorf("reading the kernel's BTF: %w", err)
	}
	fields := []struct {
		typ, path string
		off       *uint32
	}{
		{"task_struct", "pid", &o.taskPID},
		{"task_struct", "tgid", &o.taskTGID},
		{"task_struct", "real_parent", &o.taskRealParent},
		{"task_struct", "cred", &o.taskCred},
		{"task_struct", "start_time", &o.taskStart},
		{"task_struct", "group_leader", &o.taskLeader},
		{"task_struct", "nsproxy", &o.taskNsproxy},
		{"task_struct", "mm", &o.taskMM},
		{"cred", "euid", &o.credEUID},
		{"cred", "egid", &o.credEGID},
		{"nsproxy", "mnt_ns", &o.nsproxyMnt},
		{"mnt_namespace", "ns.inum", &o.mntNSInum},
		{"mm_struct", "arg_start", &o.mmArgStart},
		{"mm_struct", "arg_end", &o.mmArgEnd},
		{"linux_binprm", "file", &o.bprmFile},
		{"linux_binprm", "interp", &o.bprmInterp},
		{"file", "f_inode", &o.fileInode},
		{"inode", "i_ino", &o.inodeIno},
		{"inode", "i_sb", &o.inodeSB},
		{"super_block", "s_dev", &o.sbDev},
	}
	for _, f := range fields {
		var s *btf.Struct
		if err := spec.TypeByName(f.typ, &s); err != nil {
			return o, fmt.Errorf("kernel BTF: struct %s: %w", f.typ, err)
		}
		bits, err := path(s, f.path)
		if err != nil {
			return o, fmt.Errorf("kernel BTF: %s.%s: %w", f.typ, f.path, err)
		}
		if bits%8 != 0 {
			return o, fmt.Errorf("kernel BTF: %s.%s is not byte-aligned", f.typ, f.path)
		}
		*f.off = uint32(bits / 8)
	}
	var td *btf.Typedef
	if err := spec.TypeByName("btf_trace_sched_process_exit", &td); err == nil {
		if p, ok := td.Type.(*btf.Pointer); ok {
			if fp, ok := p.Target.(*btf.FuncProto); ok {
				// (void *data, struct task_struct *p, bool group_dead)
				o.exitGroupDead = len(fp.Params) >= 3
			}
		}
	}
	return o, nil
}

var errNoField = errors.New("no such field")

// path finds a dotted field path ("ns.inum") in s, looking into
// anonymous structs and unions on the way, and returns its offset in
// bits.
func path(s *btf.Struct, p string) (btf.Bits, error) {
	var base btf.Bits
	ms := s.Members
	for rest := p; rest != ""; {
		name := rest
		rest = ""
		for i := 0; i < len(name); i++ {
			if name[i] == '.' {
				name, rest = name[:i], name[i+1:]
				break
			}
		}
		m, off, ok := member(ms, name, base)
		if !ok {
			return 0, errNoField
		}
		base = off
		if rest == "" {
			return base, nil
		}
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			ms = t.Members
		case *btf.Union:
			ms = t.Members
		default:
			return 0, fmt.Errorf("%s is not a struct", name)
		}
	}
	return 0, errNoField
}

func member(ms []btf.Member, field string, base btf.Bits) (btf.Member, btf.Bits, bool) {
	for _, m := range ms {
		off := base + m.Offset
		if m.Name == field {
			return m, off, true
		}
		if m.Name != "" {
			continue
		}
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			if r, o, ok := member(t.Members, field, off); ok {
				return r, o, true
			}
		case *btf.Union:
			if r, o, ok := member(t.Members, field, off); ok {
				return r, o, true
			}
		}
	}
	return btf.Member{}, 0, false
}
