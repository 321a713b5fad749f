package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Scenario j: what a read costs once pre-content events guard a file's
// content (docs/design/deny.md §3). Every pread(2) of a file a block
// filter protects is a permission event (FAN_PRE_ACCESS); every read of
// any other file on an armed file system pays the kernel's check of the
// inode's marks. Reader and responder share CPU 0, as in scenario a.

// readNs runs the reader on cpu: ns per 4 KiB pread of file, and how
// many reads were denied.
func readNs(cpu, n int, file string) (ns float64, eperm int) {
	out := run(2*time.Minute, cpu, filepath.Join(*toolsDir, "reader"), strconv.Itoa(n), file)
	f := strings.Fields(out)
	if len(f) != 7 {
		fatalf("reader: unexpected output %q", out)
	}
	ns, _ = strconv.ParseFloat(f[0], 64)
	eperm, _ = strconv.Atoi(f[6])
	return ns, eperm
}

type readResult struct {
	none, noneOther   []float64 // no monitor: the protected file, a file beside nothing
	base              []float64 // minimal C pre-content responder, protected file
	fsmon, fsmonOther []float64 // daemon (arming on): protected file by its allowed reader; another file
	unarmedOther      []float64 // daemon with --no-protect.arm-filesystems: the other file
}

func reads(file, other, readerPath string) *readResult {
	r := &readResult{}
	n, nOther := *nSame/4, *nSame*5
	cfg := protectConfig(file, "protect", []string{readerPath})
	check := func(what string, eperm int) {
		if eperm != 0 {
			fatalf("reads, %s: %d reads denied", what, eperm)
		}
	}
	for rep := 0; rep < *reps; rep++ {
		progress("reads: repetition %d of %d", rep+1, *reps)
		s, e := readNs(0, n, file)
		check("no monitor", e)
		o, _ := readNs(0, nOther, other)
		r.none, r.noneOther = append(r.none, s), append(r.noneOther, o)

		resp := startMinResp(0, "preread", file)
		s, e = readNs(0, n, file)
		resp.stop()
		check("minimal C", e)
		r.base = append(r.base, s)

		d := startDaemon(0, cfg)
		s, e = readNs(0, n, file)
		check("fsmon, allowed reader", e)
		o, _ = readNs(0, nOther, other)
		d.stop()
		r.fsmon, r.fsmonOther = append(r.fsmon, s), append(r.fsmonOther, o)

		d = startDaemon(0, cfg, "--no-protect.arm-filesystems")
		o, _ = readNs(0, nOther, other)
		d.stop()
		r.unarmedOther = append(r.unarmedOther, o)
		logf("reads: none %.0f/%.0f, C %.0f, fsmon %.0f/%.0f, unarmed other %.0f ns",
			r.none[rep], r.noneOther[rep], r.base[rep], r.fsmon[rep], r.fsmonOther[rep], o)
	}
	return r
}

func reportReads(w io.Writer, r *readResult) {
	fmt.Fprintln(w, "j. A pread(2) of up to 4 KiB through an open descriptor, µs (reader and responder on CPU 0; added = minus no monitor)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| file | no monitor | minimal C (pre-content) | fsmon | added C | added fsmon | added fsmon / added C | per-rep range |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	n, b, f := median(r.none), median(r.base), median(r.fsmon)
	fmt.Fprintf(w, "| protected by a block filter, read by its allowed process | %s | %s | %s | %s | %s | %s | %s |\n",
		us(n), us(b), us(f), us(b-n), us(f-n), ratio(f-n, b-n), perRep(r.fsmon, r.base, r.none))
	no, fo, uo := median(r.noneOther), median(r.fsmonOther), median(r.unarmedOther)
	fmt.Fprintf(w, "| another file on the same file system, armed | %s | — | %s | — | %+.2f | — | — |\n", us(no), us(fo), (fo-no)/1000)
	fmt.Fprintf(w, "| the same, daemon with --no-protect.arm-filesystems | %s | — | %s | — | %+.2f | — | — |\n", us(no), us(uo), (uo-no)/1000)
	fmt.Fprintln(w)
}
