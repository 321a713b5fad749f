package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/baseline"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// What a change did to a file: its facts after and before (size, mode,
// owner, mtime, content hash), and the baseline of every watched file
// that says what "before" was, kept in --state.dir for the host's files
// so that changes made while the daemon was down are reported at its
// start (docs/changes.md).
//
// One worker owns the baseline in memory and does every stat and hash:
// the notification loop hands it each change (in order, so reports keep
// their order), and it hands the event on to the report queue. Hashing
// never runs on the permission path or the notification loop. Its queue
// is bounded: past half full, changes are reported without a hash
// (file.hash.skipped busy) so that it drains at the speed of a stat;
// when full, the notification loop waits (the kernel queue is
// unlimited: nothing is lost, the reports are later).

// Hashing says whether change events carry a content hash.
type Hashing uint8

const (
	// HashingOn hashes changed files within HashMaxSize and HashRate.
	HashingOn Hashing = iota
	// HashingOff reports facts without hashes (file.hash.skipped off).
	HashingOff
)

const (
	defaultHashMaxSize = 16 << 20
	defaultHashRate    = 10
	factsQueue         = 4096
	// saveEvery is how often a changed baseline is written (and at stop).
	saveEvery = 10 * time.Second
	hashBuf   = 256 << 10
)

type factsKind uint8

const (
	factsChange factsKind = iota + 1 // a change event to complete and report
	factsSync                        // compare a group's watched files with its baseline
	factsForget                      // a group is gone
)

type factsJob struct {
	kind factsKind
	ev   fsmon.Event
	rule grule
	g    *group
	// busy: the queue was past half full when the change came: no hash.
	busy bool
}

// factsWorker is the baseline's owner. Only its goroutine touches files,
// limits and buf; the counters are read by Snapshot.
type factsWorker struct {
	e    *Engine
	jobs chan factsJob
	// closeMu and closed keep jobs from being sent after close; quit,
	// closed first, frees a sender that waits for room, so that the
	// worker's Lock never waits on a sender that waits on the worker.
	closeMu sync.RWMutex
	closed  bool
	quit    chan struct{}
	done    chan struct{}

	files map[*group]map[string]*baseline.Entry
	// gone are the groups forgotten: a change of one that the
	// notification loop read before its marks went is reported without
	// facts, never looked at through its closed root.
	gone map[*group]struct{}
	// loaded is the host's baseline read at start, until the host's
	// files are compared with it; nil at the first start.
	loaded *baseline.Baseline
	dir    string
	store  *baseline.Writer
	dirty  bool
	limits map[baseline.Filter]*bucket
	buf    []byte

	count     atomic.Int64  // files in the baseline, every group's
	syncs     atomic.Uint64 // comparisons done (tests wait for the first)
	hashed    atomic.Uint64
	skipped   [len(hashStates)]atomic.Uint64
	hashNanos atomic.Int64
}

var hashStates = [...]fsmon.HashState{0, 0, fsmon.HashSkippedSize, fsmon.HashSkippedRate, fsmon.HashSkippedBusy,
	fsmon.HashSkippedUnreadable, fsmon.HashSkippedChanging, fsmon.HashSkippedOff}

func newFactsWorker(e *Engine) *factsWorker {
	w := &factsWorker{e: e, jobs: make(chan factsJob, factsQueue), quit: make(chan struct{}), done: make(chan struct{}),
		files: map[*group]map[string]*baseline.Entry{}, gone: map[*group]struct{}{}, limits: map[baseline.Filter]*bucket{}}
	if e.opts.StateDir != "" {
		w.dir = e.opts.StateDir
		w.store = baseline.NewWriter(w.dir, func(err error) { w.e.log.Error("writing the baseline of watched files", "err", err) })
	}
	return w
}

// load reads the host's baseline. One that cannot be read is set aside
// and a new one built quietly: the daemon then cannot tell what changed
// while it was down, and says so.
//
// The worker loads it before its first job, not New: the marks are
// placed meanwhile, and the daemon is ready without waiting for it.
func (w *factsWorker) load(dir string) {
	b, err := baseline.Load(dir, baseline.DefaultLimits)
	if err != nil {
		bad, aerr := baseline.SetAside(dir)
		if aerr != nil {
			w.e.log.Error("baseline of watched files unreadable; building a new one, changes made while the daemon was down are not reported", "err", err, "set_aside", aerr)
		} else {
			w.e.log.Error("baseline of watched files unreadable, kept as "+bad+"; building a new one, changes made while the daemon was down are not reported", "err", err)
		}
		return
	}
	if b == nil {
		w.e.log.Info("no baseline of watched files yet: building it; changes made while the daemon is down are reported from its next start", "dir", dir)
		return
	}
	w.loaded = b
	w.files[w.e.host] = b.Files
	w.count.Store(int64(len(b.Files)))
	w.e.log.Debug("baseline of watched files loaded", "dir", dir, "files", len(b.Files))
}

// submit hands a job to the worker; false once it has stopped.
func (w *factsWorker) submit(j factsJob) bool {
	w.closeMu.RLock()
	defer w.closeMu.RUnlock()
	if w.closed {
		return false
	}
	select {
	case w.jobs <- j:
		return true
	case <-w.quit:
		return false
	}
}

// stop ends the worker: it does the jobs queued, writes the baseline and
// closes done. It must come while the permission loop still answers:
// the worker's stats and hashes open watched files, and the daemon's
// own opens of protected files wait for that loop's answer.
func (w *factsWorker) stop() { close(w.quit) }

// change hands over a change of the notification loop. The event goes
// to the report queue as it is if the worker has stopped.
func (w *factsWorker) change(ev *fsmon.Event, rule grule) {
	j := factsJob{kind: factsChange, ev: *ev, rule: rule, g: rule.Group, busy: len(w.jobs) > cap(w.jobs)/2}
	if !w.submit(j) {
		w.e.enqueue(ev)
	}
}

// sync asks for the watched files of g to be compared with their
// baseline.
func (w *factsWorker) sync(g *group) { w.submit(factsJob{kind: factsSync, g: g}) }

// forget drops the baseline of a group that is gone, and closes its
// root once the changes queued before are done with it: closed at
// once, its number could be another directory's by then.
func (w *factsWorker) forget(g *group) {
	if !w.submit(factsJob{kind: factsForget, g: g}) {
		unix.Close(g.RootFD)
	}
}

// run does the jobs until stop is called, then those still queued, and
// writes the baseline.
func (w *factsWorker) run() {
	defer close(w.done)
	if w.dir != "" {
		w.load(w.dir)
	}
	saveStop, saved := make(chan struct{}), make(chan struct{})
	if w.store != nil {
		go func() { defer close(saved); w.store.Run(saveStop) }()
	} else {
		close(saved)
	}
	t := time.NewTicker(saveEvery)
	defer t.Stop()
	for {
		select {
		case j := <-w.jobs:
			w.do(&j)
		case <-t.C:
			w.save()
		case <-w.quit:
			w.closeMu.Lock()
			w.closed = true
			w.closeMu.Unlock()
			for {
				select {
				case j := <-w.jobs:
					w.do(&j)
					continue
				default:
				}
				break
			}
			w.save()
			close(saveStop)
			<-saved
			return
		}
	}
}

func (w *factsWorker) do(j *factsJob) {
	switch j.kind {
	case factsChange:
		w.onChange(j)
	case factsSync:
		w.onSync(j.g)
	case factsForget:
		w.count.Add(-int64(len(w.files[j.g])))
		delete(w.files, j.g)
		if len(w.gone) >= 1024 {
			clear(w.gone) // long gone: no change of theirs is still queued
		}
		w.gone[j.g] = struct{}{}
		unix.Close(j.g.RootFD)
	}
}

// onChange completes a change event with the file's facts after and
// before, updates the baseline and reports the event.
func (w *factsWorker) onChange(j *factsJob) {
	ev, g := &j.ev, j.g
	if _, gone := w.gone[g]; gone {
		w.e.enqueue(ev)
		return
	}
	files := w.files[g]
	prev := files[ev.Path]
	if prev != nil {
		ev.Previous = &prev.Facts
	}
	var o *baseline.Observed
	if ev.Op != fsmon.OpDelete {
		o, _ = baseline.Stat(g.RootFD, ev.Path)
	}
	if o == nil {
		// Gone (or not a regular file): what it was, and it leaves the
		// baseline once its name is gone.
		if prev != nil && (ev.Op == fsmon.OpDelete || ev.Op == fsmon.OpRename) {
			w.remove(g, ev.Path)
		}
		w.e.enqueue(ev)
		return
	}
	defer o.Close()
	f := filterOf(j.rule.Rule)
	switch {
	case ev.Op == fsmon.OpAttrib && prev != nil && prev.Dev == o.Dev && prev.Ino == o.Ino &&
		!baseline.ContentDiffers(&prev.Facts, &o.Facts) && prev.Facts.Hash == fsmon.HashComputed:
		// A change of attributes only (chmod, chown): the content is
		// the one hashed before.
		o.Facts.Hash, o.Facts.SHA256 = prev.Facts.Hash, prev.Facts.SHA256
	case j.busy:
		w.skip(o, fsmon.HashSkippedBusy)
	default:
		w.hash(o, f, true)
	}
	w.name(g, o)
	entry := &baseline.Entry{Filter: f, Dev: o.Dev, Ino: o.Ino, Ctime: o.Ctime, Facts: o.Facts}
	ev.File = &entry.Facts
	w.put(g, ev.Path, entry)
	w.e.enqueue(ev)
}

// onSync compares the watched files of g with their baseline: the
// first time for the host after a baseline was loaded, each difference
// is reported as a change made while the daemon was down; otherwise (a
// reload, a new container, the first start) the baseline is brought up
// to date quietly. Files whose inode says they are as they were keep
// their hash: a start with 100,000 unchanged files is 100,000 stats.
func (w *factsWorker) onSync(g *group) {
	if _, gone := w.gone[g]; gone {
		return
	}
	old := w.files[g]
	now := make(map[string]*baseline.Entry, len(old))
	for _, wf := range w.e.marks.WatchedFiles(g) {
		o, err := baseline.Stat(g.RootFD, wf.Path)
		if err != nil {
			continue
		}
		f := filterOf(pickRule(wf.Rules).Rule)
		if prev := old[wf.Path]; o.Unchanged(prev) && prev.Facts.Hash == fsmon.HashComputed {
			o.Facts.Hash, o.Facts.SHA256 = prev.Facts.Hash, prev.Facts.SHA256
		} else {
			w.hash(o, f, false)
		}
		o.Close()
		w.name(g, o)
		if len(now) < baseline.DefaultLimits.MaxEntries {
			now[wf.Path] = &baseline.Entry{Filter: f, Dev: o.Dev, Ino: o.Ino, Ctime: o.Ctime, Facts: o.Facts}
		}
	}
	if g == w.e.host && w.loaded != nil {
		w.e.mu.RLock()
		rules := g.Rules
		w.e.mu.RUnlock()
		w.reportWhileDown(baseline.Diff(&baseline.Baseline{Files: old, Filters: w.loaded.Filters}, now, filtersOf(rules)), rules)
		w.loaded = nil
	}
	w.count.Add(int64(len(now) - len(old)))
	w.files[g] = now
	defer w.syncs.Add(1)
	if g == w.e.host {
		w.dirty = true
		w.save()
	}
}

// reportWhileDown reports the changes found at start: made while the
// daemon was down, by a process nobody saw.
func (w *factsWorker) reportWhileDown(changes []baseline.Change, rules []*policy.Rule) {
	now := time.Now()
	for _, c := range changes {
		ev := fsmon.Event{Time: now, Kind: fsmon.KindChange, Op: c.Op, Path: c.Path, Count: 1,
			Process: fsmon.Process{UserID: -1}, Reason: fsmon.ReasonWhileDown}
		e := c.After
		if e == nil {
			e = c.Before
		}
		ev.Profile, ev.Filter = e.Profile, e.Filter.Filter
		for _, r := range rules {
			if r.Profile.Name == e.Profile && r.Name == e.Filter.Filter {
				ev.Mode = r.Mode
				break
			}
		}
		if c.After != nil {
			ev.File = &c.After.Facts
		}
		if c.Before != nil {
			ev.Previous = &c.Before.Facts
		}
		w.e.enqueue(&ev)
	}
	if len(changes) > 0 {
		w.e.log.Info("watched files changed while the daemon was down", "files", len(changes))
	}
}

// hash sets o's hash, or why it has none: hashing off, larger than
// HashMaxSize, and for changes (limited) past the filter's rate.
func (w *factsWorker) hash(o *baseline.Observed, f baseline.Filter, limited bool) {
	switch {
	case w.e.opts.Hashing == HashingOff:
		w.skip(o, fsmon.HashSkippedOff)
		return
	case o.Facts.Size > w.maxSize():
		w.skip(o, fsmon.HashSkippedSize)
		return
	case limited && !w.bucket(f).take(time.Now()):
		w.skip(o, fsmon.HashSkippedRate)
		return
	}
	if w.buf == nil {
		w.buf = make([]byte, hashBuf)
	}
	start := time.Now()
	o.Hash(w.buf)
	w.hashNanos.Add(int64(time.Since(start)))
	if o.Facts.Hash == fsmon.HashComputed {
		w.hashed.Add(1)
	} else {
		w.skipped[o.Facts.Hash].Add(1)
	}
}

func (w *factsWorker) skip(o *baseline.Observed, why fsmon.HashState) {
	o.Facts.Hash = why
	w.skipped[why].Add(1)
}

func (w *factsWorker) maxSize() int64 {
	if w.e.opts.HashMaxSize > 0 {
		return w.e.opts.HashMaxSize
	}
	return defaultHashMaxSize
}

func (w *factsWorker) bucket(f baseline.Filter) *bucket {
	b := w.limits[f]
	if b == nil {
		if len(w.limits) > 4096 {
			clear(w.limits) // filters of old configurations
		}
		rate := w.e.opts.HashRate
		if rate <= 0 {
			rate = defaultHashRate
		}
		b = &bucket{rate: rate, burst: max(rate, 1)}
		b.tokens = b.burst
		w.limits[f] = b
	}
	return b
}

// name adds the owner's and group's names in the group's own account
// files.
func (w *factsWorker) name(g *group, o *baseline.Observed) {
	o.Facts.OwnerName = w.e.users.Name(g.NS, g.RootFD, int64(o.Facts.UID))
	o.Facts.GroupName = w.e.groupNames.Name(g.NS, g.RootFD, int64(o.Facts.GID))
}

func (w *factsWorker) put(g *group, p string, e *baseline.Entry) {
	files := w.files[g]
	if files == nil {
		files = map[string]*baseline.Entry{}
		w.files[g] = files
	}
	if _, ok := files[p]; !ok {
		if len(files) >= baseline.DefaultLimits.MaxEntries {
			return
		}
		w.count.Add(1)
	}
	files[p] = e
	w.dirty = w.dirty || g == w.e.host
}

func (w *factsWorker) remove(g *group, p string) {
	if _, ok := w.files[g][p]; ok {
		delete(w.files[g], p)
		w.count.Add(-1)
		w.dirty = w.dirty || g == w.e.host
	}
}

// save hands the host's baseline to the writer when it changed. Not
// before the host's files were compared with the loaded one: until
// then the file is the record of what they were.
func (w *factsWorker) save() {
	if w.store == nil || !w.dirty || w.loaded != nil {
		return
	}
	w.dirty = false
	files := make(map[string]*baseline.Entry, len(w.files[w.e.host]))
	for p, e := range w.files[w.e.host] {
		files[p] = e // entries are never changed, only replaced
	}
	w.e.mu.RLock()
	filters := filtersOf(w.e.host.Rules)
	w.e.mu.RUnlock()
	w.store.Save(baseline.Snapshot{Baseline: &baseline.Baseline{Files: files, Filters: filters}, At: time.Now()})
}

func filterOf(r *policy.Rule) baseline.Filter {
	return baseline.Filter{Profile: r.Profile.Name, Filter: r.Name}
}

func filtersOf(rules []*policy.Rule) map[baseline.Filter]struct{} {
	m := make(map[baseline.Filter]struct{}, len(rules))
	for _, r := range rules {
		m[filterOf(r)] = struct{}{}
	}
	return m
}

// bucket is a token bucket: rate a second, at most burst at once.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *bucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// BaselineState is the worker's part of the engine's snapshot.
func (w *factsWorker) state() fsmon.BaselineState {
	s := fsmon.BaselineState{Files: int(w.count.Load()), Hashed: w.hashed.Load(),
		HashSeconds: time.Duration(w.hashNanos.Load()).Seconds(), Skipped: map[fsmon.HashState]uint64{}}
	for _, h := range fsmon.HashSkips {
		s.Skipped[h] = w.skipped[h].Load()
	}
	return s
}
