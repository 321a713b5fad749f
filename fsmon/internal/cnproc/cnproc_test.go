package cnproc

import (
	"encoding/binary"
	"errors"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// msg builds one datagram: nlmsghdr, cn_msg, proc_event with the given
// union words.
func msg(what What, cpu, seq uint32, words ...uint32) []byte {
	data := make([]byte, evData+4*len(words))
	ne := binary.NativeEndian
	ne.PutUint32(data[0:], uint32(what))
	ne.PutUint32(data[4:], cpu)
	for i, w := range words {
		ne.PutUint32(data[evData+4*i:], w)
	}
	b := make([]byte, nlmsgHdrLen+cnMsgLen+len(data))
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.NLMSG_DONE)
	ne.PutUint32(b[16:], idxProc)
	ne.PutUint32(b[20:], valProc)
	ne.PutUint32(b[24:], seq)
	ne.PutUint16(b[32:], uint16(len(data)))
	copy(b[36:], data)
	return b
}

func TestParse(t *testing.T) {
	var got []Event
	collect := func(ev *Event) { got = append(got, *ev) }
	b := msg(Exec, 1, 7, 100, 100)
	// Two messages in one datagram (aligned), then a fork: the child.
	b = append(b, msg(Fork, 0, 3, 10, 10, 11, 11)...)
	comm := msg(Comm, 1, 8, 12, 12, 0, 0, 0, 0)
	copy(comm[nlmsgHdrLen+cnMsgLen+evData+8:], "worker")
	b = append(b, comm...)
	if err := Parse(b, collect); err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{What: Exec, CPU: 1, Seq: 7, PID: 100, TGID: 100},
		{What: Fork, CPU: 0, Seq: 3, PID: 11, TGID: 11},
		{What: Comm, CPU: 1, Seq: 8, PID: 12, TGID: 12, Comm: [16]byte{'w', 'o', 'r', 'k', 'e', 'r'}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	// An unknown kind is passed on (its number counts), without a pid.
	got = nil
	if err := Parse(msg(0x1000, 0, 4, 9, 9), collect); err != nil || len(got) != 1 || got[0].Seq != 4 || got[0].TGID != 0 {
		t.Fatalf("unknown kind: %v %+v", err, got)
	}
	for _, bad := range [][]byte{
		msg(Exec, 0, 0)[:10],
		msg(Exec, 0, 0),                     // no pid words
		msg(Fork, 0, 0, 1, 1),               // no child
		msg(Comm, 0, 0, 1, 1),               // no name
		append(msg(Exec, 0, 0, 1, 1), 1, 2), // trailing bytes too short for a header
	} {
		if err := Parse(bad, func(*Event) {}); err == nil {
			t.Errorf("cut message accepted: % x", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(msg(Exec, 1, 7, 100, 100))
	f.Add(append(msg(Fork, 0, 3, 10, 10, 11, 11), msg(Exit, 0, 4, 11, 11, 0, 0, 10, 10)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		Parse(b, func(ev *Event) {
			if ev.What == None && ev.PID != 0 {
				t.Fatalf("ack with a pid: %+v", ev)
			}
		})
	})
}

// TestExecEvent runs a real child and expects its exec and its exit,
// numbered without gaps on each CPU, from the kernel.
func TestExecEvent(t *testing.T) {
	testroot.Require(t)
	c, err := Open(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := int32(cmd.Process.Pid)
	buf := make([]byte, 8192)
	var exec, exit bool
	last := map[uint32]uint32{}
	deadline := time.Now().Add(5 * time.Second)
	for !(exec && exit) && time.Now().Before(deadline) {
		err := c.Recv(buf, func(ev *Event) {
			if ev.What == None {
				return
			}
			if s, ok := last[ev.CPU]; ok && ev.Seq != s+1 {
				t.Errorf("CPU %d: event %d after %d", ev.CPU, ev.Seq, s)
			}
			last[ev.CPU] = ev.Seq
			switch {
			case ev.What == Exec && ev.TGID == pid:
				exec = true
			case ev.What == Exit && ev.TGID == pid:
				exit = true
			}
		})
		if errors.Is(err, unix.EAGAIN) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !exec || !exit {
		t.Fatalf("child %d: exec seen %v, exit seen %v", pid, exec, exit)
	}
}

// TestSelfTest: a thread that renames itself gets a Comm event with its
// own tid, which is how the engine checks the connector works for it.
func TestSelfTest(t *testing.T) {
	testroot.Require(t)
	c, err := Open(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SelfTest(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}
