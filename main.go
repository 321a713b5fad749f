// Command fsmon_exporter watches chosen files on the host with fanotify
// and inotify, denies opens that a profile forbids, and reports every
// event as a JSON line, as Prometheus metrics and as OpenTelemetry
// records.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"go.opentelemetry.io/otel"

	"github.com/fsmon/fsmon_exporter/collector"
	"github.com/fsmon/fsmon_exporter/exporters/fold"
	"github.com/fsmon/fsmon_exporter/exporters/jsonl"
	otelexp "github.com/fsmon/fsmon_exporter/exporters/otel"
	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/configwatch"
	"github.com/fsmon/fsmon_exporter/fsmon/engine"
	"github.com/fsmon/fsmon_exporter/fsmon/ocihook"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

type flags struct {
	configFile       string
	configCheck      bool
	configWatch      bool
	metricsPath      string
	disableExporter  bool
	maxRequests      int
	eventsStdout     bool
	queueSize        int
	permTimeout      time.Duration
	failClosed       bool
	exeCache         string
	priority         string
	armFilesystems   bool
	foldWindow       time.Duration
	containerScan    time.Duration
	maxObjects       int
	groupBudget      int
	hookSocket       string
	stateDir         string
	learnStateFile   string
	containerCap     int
	criSockets       []string
	web              *web.FlagConfig
	log              *promslog.Config
	processTable     string
	processTableSize int
	exitedRetention  time.Duration
	hashMaxSize      units.Base2Bytes
	hashRate         float64
}

func parseFlags(args []string) *flags {
	f := &flags{log: &promslog.Config{}}
	app := kingpin.New("fsmon_exporter", "Watch, report and deny access to important files with fanotify and inotify.")
	app.Flag("config.file", "YAML profiles; without it the embedded default (the built-in important files, monitor mode) applies.").
		StringVar(&f.configFile)
	app.Flag("config.check", "Validate the configuration, print problems as FILE:LINE: message, exit 0 if valid and 1 if not.").
		BoolVar(&f.configCheck)
	app.Flag("config.watch", "Reload the configuration file when it changes on disk (written, replaced, or a Kubernetes ConfigMap's symlink swap), as SIGHUP does; --no-config.watch reloads on SIGHUP only.").
		Default("true").BoolVar(&f.configWatch)
	app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").StringVar(&f.metricsPath)
	app.Flag("web.disable-exporter-metrics", "Exclude the Go and process metrics of the exporter itself.").BoolVar(&f.disableExporter)
	app.Flag("web.max-requests", "Maximum number of parallel scrape requests; 0 disables the limit.").Default("40").IntVar(&f.maxRequests)
	app.Flag("events.stdout", "Write one JSON object per event per line on stdout (--no-events.stdout to turn off).").
		Default("true").BoolVar(&f.eventsStdout)
	app.Flag("events.queue-size", "Events that may wait for the sinks; past it events are dropped and counted.").
		Default("16384").IntVar(&f.queueSize)
	app.Flag("permission.timeout", "Deadline of one permission decision; past it the default answer is written and counted.").
		Default("250ms").DurationVar(&f.permTimeout)
	app.Flag("fail-closed", "Deny, rather than allow, an open whose decision misses the deadline.").BoolVar(&f.failClosed)
	app.Flag("permission.exe-cache", "How allow lists learn what a process runs: on caches it per process, read again after each exec, exit or rename (counted in the kernel by a BPF program); off reads /proc/PID/exe at every decision.").
		Default("on").EnumVar(&f.exeCache, "on", "off")
	app.Flag("process.table", "Where reports learn who made a change: on keeps a table of every process, fed by the kernel at exec, fork and exit (BPF programs), so that a change names its process after that has exited; off reads /proc when the event is read (a process gone by then is its pid only).").
		Default("on").EnumVar(&f.processTable, "on", "off")
	app.Flag("process.table-size", "Most processes the process table holds, live and recently exited; past it the oldest exited go first, counted in fsmon_process_table_evictions_total.").
		Default("16384").IntVar(&f.processTableSize)
	app.Flag("process.exited-retention", "How long the process table keeps an exited process, for its changes still to be read.").
		Default("30s").DurationVar(&f.exitedRetention)
	app.Flag("permission.priority", "Scheduling of the threads that answer permission events: realtime (SCHED_FIFO 10, the watchdog 11; nice -20 where refused), so that a flood of openers cannot keep decisions from the CPU, or normal.").
		Default("realtime").EnumVar(&f.priority, "realtime", "normal")
	app.Flag("protect.arm-filesystems", "Arm the file systems that hold files of protect-mode block filters (a file system mark of its own fanotify group, which gets no events), so that a descriptor opened before a file's own mark (a new file's first instants, the walk at start and reload) is still judged at its reads and writes. Costs about 0.25 µs per read or write of any file on an armed file system; --no-protect.arm-filesystems leaves such descriptors unjudged.").
		Default("true").BoolVar(&f.armFilesystems)
	app.Flag("events.fold-window", "Identical events (same event, op, file, process, container) within this window are reported once with a count; 0 turns folding off. Metrics count every event.").
		Default("500ms").DurationVar(&f.foldWindow)
	app.Flag("containers.scan-interval", "How often /proc is scanned for containers that started or stopped; 0 watches the host only.").
		Default("1s").DurationVar(&f.containerScan)
	app.Flag("containers.cri-socket", "CRI API socket of a Kubernetes runtime, as a path on the host, asked for the pod, labels and name of the containers it runs; repeatable; one empty value asks none. Docker's and podman's containers are named from their state files.").
		Default(engine.DefaultCRISockets...).StringsVar(&f.criSockets)
	app.Flag("watch.max-objects", "Most directories and files that monitor-only filters follow at once; past it the rest is not followed and the log says so. Files of block and report_access filters are always marked.").
		Default("1048576").IntVar(&f.maxObjects)
	app.Flag("containers.max-objects", "Most directories and files each container's filters mark or follow, block filters' too; past it the rest of that container is not marked and the log says so (fsmon_container_budget_unmarked_objects). A container cannot use up the host's objects or inotify watches; 0: no budget but --watch.max-objects.").
		Default(strconv.Itoa(engine.DefaultGroupBudget)).IntVar(&f.groupBudget)
	app.Flag("containers.hook-socket", "Unix socket the OCI hook (`fsmon_exporter hook`, run by podman and CRI-O from a hooks directory) tells the daemon of a starting container at, and waits on until its marks are placed; only root in the host's mount namespace is heard. Empty: no socket.").
		Default(defaultHookSocket).StringVar(&f.hookSocket)
	app.Flag("state.dir", "Directory of the state kept across restarts: what the executables of allow lists resolved to, so that the processes of a program upgraded while the daemon was down stay allowed; the baseline of the host's watched files, so that what changed while the daemon was down is reported at its start; empty keeps nothing.").
		Default("/var/lib/fsmon_exporter").StringVar(&f.stateDir)
	app.Flag("hash.max-size", "Largest watched file whose content change events hash (SHA-256, file.hash.sha256); larger ones are reported with file.hash.skipped=size; 0 hashes nothing.").
		Default("16MiB").BytesVar(&f.hashMaxSize)
	app.Flag("hash.rate-per-filter", "Content hashes a second of each filter's changed files (a burst of as many); changes past it are reported with file.hash.skipped=rate.").
		Default("10").Float64Var(&f.hashRate)
	app.Flag("learn.state-file", "File of the learned set (GET /learned), kept across restarts and reloads; default "+engine.LearnedFileName+" in --state.dir (with an empty --state.dir the set is kept in memory only).").
		PlaceHolder("STATE.DIR/" + engine.LearnedFileName).StringVar(&f.learnStateFile)
	app.Flag("metrics.container-cap", "Distinct values of the container label before new containers are counted as other.").
		Default(strconv.Itoa(collector.DefaultContainerCap)).IntVar(&f.containerCap)
	f.web = kingpinflag.AddFlags(app, ":9717")
	promslogflag.AddFlags(app, f.log)
	app.Version(version.Print("fsmon_exporter"))
	app.HelpFlag.Short('h')
	kingpin.MustParse(app.Parse(args))
	return f
}

// hashing is off for --hash.max-size=0.
func hashing(maxSize units.Base2Bytes) engine.Hashing {
	if maxSize <= 0 {
		return engine.HashingOff
	}
	return engine.HashingOn
}

// init keeps the main goroutine on the main thread, and every other
// goroutine off it. A signal sent to the process (kill PID: SIGTERM,
// SIGHUP) goes to the thread group leader when it can take it, and a
// leader that waits in the kernel for a fanotify permission answer (an
// open, a read) sleeps killable, not interruptible: the signal then stays
// pending until that answer comes, which may be never (measured: a Go
// process whose leader is blocked in an unanswered open never saw its
// SIGTERM; with the open on another thread it did at once). Locked here,
// the leader only ever runs the main goroutine, whose signal loop waits
// on channels; the reloads, walks and loops that open files run on other
// threads. (TestReloadStuckPlacingMarks failed now and then when the
// blocked reload happened to run on the leader.)
func init() { runtime.LockOSThread() }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hook" {
		os.Exit(hookMain(os.Args[2:]))
	}
	spareP()
	os.Exit(run(os.Args[1:]))
}

// hookMain is `fsmon_exporter hook [--socket=PATH] [--wait=D]`: the OCI
// runtime hook that a runtime runs before a container's first program
// (docs/config.md, "OCI hook"), which waits until the daemon has placed
// the container's marks.
func hookMain(args []string) int {
	fs := flag.NewFlagSet("hook", flag.ContinueOnError)
	socket := fs.String("socket", defaultHookSocket, "the daemon's hook socket (--containers.hook-socket)")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the daemon's answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	return ocihook.Run(os.Stdin, os.Stderr, *socket, *wait)
}

// defaultHookSocket is where the daemon listens for its OCI hook.
const defaultHookSocket = "/run/fsmon_exporter/hook.sock"

// spareP gives the runtime at least two Ps unless GOMAXPROCS is set. The
// permission loop sits in a blocking read(2) on a thread of its own,
// holding its P; with one P only (one CPU, or a container's CPU limit of
// one), the runtime's sysmon takes that P back from the blocked thread
// every 20 µs it finds nothing else idle, and its wakeups land on the
// path of every open the daemon answers. A second P keeps sysmon asleep
// and leaves the HTTP server and the other loops a P to run on.
func spareP() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
}

// loadPolicy reads and compiles the configuration, or the embedded
// default when path is empty.
func loadPolicy(path string) (*policy.Policy, error) {
	var cfg *policy.Config
	if path == "" {
		cfg = policy.Default()
	} else {
		var err error
		if cfg, err = policy.Load(path); err != nil {
			return nil, err
		}
	}
	return policy.Compile(cfg)
}

func run(args []string) int {
	f := parseFlags(args)
	f.log.Writer = os.Stderr
	// A reader of stdout or stderr that goes away (a log shipper
	// restarted, `| head`) must not kill the daemon: with SIGPIPE at its
	// default, Go exits on a write to a broken pipe on fd 1 or 2. Ignored,
	// the write fails with EPIPE and the stdout queue counts the event as
	// lost.
	signal.Ignore(syscall.SIGPIPE)
	logger := promslog.New(f.log)

	// The watch starts before the first load, so that a change made while
	// the daemon starts is a reload, not lost.
	var watch *configwatch.Watcher
	if f.configFile != "" && f.configWatch && !f.configCheck {
		w, err := configwatch.New(f.configFile, configwatch.Options{Logger: logger.With("component", "configwatch")})
		if err != nil {
			logger.Warn("cannot watch the configuration file; it is reloaded on SIGHUP only", "file", f.configFile, "err", err)
		} else {
			watch = w
			defer watch.Close()
		}
	}

	pol, err := loadPolicy(f.configFile)
	if f.configCheck {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		name := f.configFile
		if name == "" {
			name = "<default>"
		}
		fmt.Fprintf(os.Stderr, "%s: valid: %d profiles, %d filters\n", name, len(pol.Profiles), len(pol.Rules))
		return 0
	}
	if err != nil {
		logConfigError(logger, "invalid configuration; not starting", f.configFile, err)
		return 1
	}
	logger.Info("starting fsmon_exporter", "version", version.Info(), "build_context", version.BuildContext())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The SDK's own errors (a collector that refuses) go to the log in its
	// format, not to the standard library's logger.
	otelLog := logger.With("component", "otel")
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { otelLog.Warn("OpenTelemetry SDK", "err", err) }))
	exp, err := otelexp.New(ctx, otelexp.Options{Logger: otelLog, ServiceVersion: version.Version})
	if err != nil {
		logger.Error("OpenTelemetry configuration (OTEL_* variables)", "err", err)
		return 1
	}
	// Metrics count every event; the log sinks get folded bursts.
	events := collector.NewEventMetrics(f.containerCap)
	var logSinks fsmon.Sinks
	var stdout *jsonl.Queue
	if f.eventsStdout {
		// Its own queue: a stdout nobody reads must not stall the report
		// goroutine, which also counts the events for the metrics.
		stdout = jsonl.NewQueue(jsonl.New(os.Stdout, logger.With("sink", "stdout")), f.queueSize)
		logSinks = append(logSinks, stdout)
	}
	if exp.Enabled() {
		logSinks = append(logSinks, exp)
	}
	folder := fold.New(logSinks, f.foldWindow)
	sinks := fsmon.Sinks{events}
	if len(logSinks) > 0 {
		// Folding serves the log sinks only; without any, events are
		// counted and that is all.
		sinks = append(sinks, folder)
	}
	flush := func() {
		folder.Close()
		sctx, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		if stdout != nil {
			if err := stdout.Close(sctx); err != nil {
				logger.Error("writing the last events to stdout", "err", err)
			}
		}
		if err := exp.Shutdown(sctx); err != nil {
			logger.Error("flushing OpenTelemetry exports", "err", err)
		}
	}

	def := engine.FailOpen
	if f.failClosed {
		def = engine.FailClosed
	}
	priority := engine.PriorityRealtime
	if f.priority == "normal" {
		priority = engine.PriorityNormal
	}
	exeCache := engine.ExeCacheOn
	if f.exeCache == "off" {
		exeCache = engine.ExeCacheOff
	}
	arming := engine.ArmFilesystems
	if !f.armFilesystems {
		arming = engine.ArmOff
	}
	processTable := engine.ProcessTableOn
	if f.processTable == "off" {
		processTable = engine.ProcessTableOff
	}
	eng, err := engine.New(engine.Options{
		Logger:           logger.With("component", "engine"),
		DecisionTimeout:  f.permTimeout,
		Default:          def,
		QueueSize:        f.queueSize,
		Sink:             sinks,
		ContainerScan:    f.containerScan,
		MaxObjects:       f.maxObjects,
		GroupBudget:      f.groupBudget,
		ExeCache:         exeCache,
		Priority:         priority,
		StateDir:         f.stateDir,
		LearnStateFile:   f.learnFile(),
		Arming:           arming,
		CRISockets:       nonEmpty(f.criSockets),
		ProcessTable:     processTable,
		ProcessTableSize: f.processTableSize,
		ExitedRetention:  f.exitedRetention,
		Hashing:          hashing(f.hashMaxSize),
		HashMaxSize:      int64(f.hashMaxSize),
		HashRate:         f.hashRate,
	})
	if err != nil {
		if errors.Is(err, engine.ErrNotRoot) || os.Geteuid() != 0 {
			logger.Error("fsmon_exporter must run as root: fanotify permission events need CAP_SYS_ADMIN", "err", err)
		} else {
			logger.Error("cannot start the monitor engine", "err", err)
		}
		return 1
	}

	runDone := make(chan error, 1)
	go func() { runDone <- eng.Run(ctx) }()

	reg := prometheus.NewRegistry()
	if !f.disableExporter {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	reloadMetrics, err := collector.Register(reg, stateSource{eng, exp, stdout}, events, logger.With("component", "collector"))
	if err != nil {
		logger.Error("registering metrics", "err", err)
		cancel()
		<-runDone
		return 1
	}
	// The configuration's label sets are at 0 from the first scrape.
	events.SetKnown(pol.KnownSeries())
	srv := newServer(f, reg, eng, logger)
	srvErr := make(chan error, 1)
	go func() { srvErr <- web.ListenAndServe(srv, f.web, logger) }()

	// Marks are placed with the server up, so /-/ready answers 503 until
	// they are all in place.
	res, err := eng.Apply(pol)
	if err != nil && !errors.Is(err, engine.ErrPartial) {
		logger.Error("placing marks failed", "err", err)
		return shutdown(cancel, runDone, srv, flush, newReloader(logger, f.configFile, eng, reloadMetrics, events), logger, 1)
	}
	reloadMetrics.Set(true, time.Now())
	logApply(logger, "ready", res)
	// Hooks are heard once a configuration is in force: a container
	// the hook tells of is then walked with it before it starts.
	if f.hookSocket != "" && f.containerScan > 0 {
		if ln, err := ocihook.Listen(f.hookSocket); err != nil {
			logger.Warn("no OCI hook socket: containers are found by the scan and exec events only", "err", err)
		} else {
			go ocihook.Serve(ctx, ln, "/proc", eng, logger.With("component", "hook"))
			defer os.Remove(f.hookSocket)
		}
	}

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	// The signal loop never does a reload itself: a configuration path
	// that blocks (a file on a hung NFS server) must block only the
	// reloader, never SIGTERM.
	rctx, stopReloads := context.WithCancel(ctx)
	rl := newReloader(logger, f.configFile, eng, reloadMetrics, events)
	go rl.run(rctx)
	if watch != nil {
		// A change on disk is a SIGHUP: the same request, the same reload.
		go watch.Run(rctx, func() {
			logger.Info("configuration file changed on disk; reloading", "file", f.configFile)
			rl.request()
		})
	}
	stop := func(code int) int {
		// A second SIGTERM or SIGINT while stopping ends the daemon at
		// once: an operator's way out of a shutdown that waits too long.
		go func() {
			for s := range sig {
				if s != syscall.SIGHUP {
					logger.Error("second signal while shutting down; exiting at once", "signal", s.String())
					os.Exit(1)
				}
			}
		}()
		stopReloads()
		return shutdown(cancel, runDone, srv, flush, rl, logger, code)
	}
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				rl.request()
				continue
			}
			logger.Info("shutting down", "signal", s.String())
			return stop(0)
		case err := <-srvErr:
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("web server failed", "err", err)
				return stop(1)
			}
		case err := <-runDone:
			logger.Error("monitor engine stopped", "err", err)
			flush()
			return 1
		}
	}
}

func logApply(logger *slog.Logger, msg string, res engine.ApplyResult) {
	attrs := []any{"directories", res.Dirs, "files", res.Files, "took", res.Took.Round(time.Millisecond)}
	if res.Errors > 0 {
		attrs = append(attrs, "unmarked", res.Errors, "first_error", res.FirstError)
	}
	if res.Incomplete {
		logger.Error(msg+", but not every mark could be placed: /-/ready stays 503 (see first_error: raise --watch.max-objects or fs.inotify.max_user_watches, or narrow the filter)", attrs...)
		return
	}
	logger.Info(msg, attrs...)
}

// reloader loads and applies the configuration file again on request,
// in a goroutine of its own, one reload at a time.
type reloader struct {
	logger  *slog.Logger
	path    string
	eng     *engine.Engine
	metrics *collector.ReloadMetrics
	// events gets the label sets of each configuration put in force, to
	// export them at 0 and drop those of removed profiles.
	events *collector.EventMetrics
	// req holds at most one request: SIGHUPs that come while one waits
	// are the same request, since the reload reads the file as it is
	// when it starts.
	req chan struct{}
	// busy is when the running reload started (Unix ns), 0 when idle.
	busy atomic.Int64
	// applying is held by a reload while it places marks, and taken for
	// good by shutdown, so that no Apply runs while the engine stops.
	applying chan struct{}
}

func newReloader(logger *slog.Logger, path string, eng *engine.Engine, m *collector.ReloadMetrics, events *collector.EventMetrics) *reloader {
	return &reloader{logger: logger, path: path, eng: eng, metrics: m, events: events, req: make(chan struct{}, 1), applying: make(chan struct{}, 1)}
}

// request asks for a reload without ever waiting.
func (r *reloader) request() {
	select {
	case r.req <- struct{}{}:
	default: // one is already waiting: it reads the file as it is then
	}
	if start := r.busy.Load(); start != 0 {
		r.logger.Warn("a configuration reload is still running; this request runs after it (a reload that never ends is a configuration path that blocks, such as a hung network file system)",
			"file", r.path, "running_for", time.Since(time.Unix(0, start)).Round(time.Millisecond))
	}
}

func (r *reloader) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.req:
		}
		r.busy.Store(time.Now().UnixNano())
		ok, done := r.reload(ctx)
		r.busy.Store(0)
		if done {
			r.metrics.Set(ok, time.Now())
		}
	}
}

// reload applies the configuration file again; a bad file keeps the old
// policy in force. done is false when the daemon began to stop before
// the reload got to an end, which then says nothing about the file.
func (r *reloader) reload(ctx context.Context) (ok, done bool) {
	pol, err := loadPolicy(r.path)
	if ctx.Err() != nil {
		return false, false
	}
	if err != nil {
		logConfigError(r.logger, "reloading configuration failed; the previous configuration stays in force", r.path, err)
		return false, true
	}
	select {
	case r.applying <- struct{}{}:
	case <-ctx.Done():
		return false, false
	}
	defer func() { <-r.applying }()
	if ctx.Err() != nil {
		return false, false
	}
	res, err := r.eng.Apply(pol)
	if err != nil && !errors.Is(err, engine.ErrPartial) {
		r.logger.Error("reloading configuration failed", "file", r.path, "err", err)
		return false, true
	}
	r.events.SetKnown(pol.KnownSeries())
	logApply(r.logger, "configuration reloaded", res)
	return true, true
}

// logConfigError logs a configuration that cannot be loaded: one record
// per problem of the file, with its file, line and problem as attributes
// (so --log.format=json gives one JSON object each, and a log pipeline
// can count and group them), or one record with err for a file that
// could not be read at all.
func logConfigError(logger *slog.Logger, msg, file string, err error) {
	var list *policy.ErrorList
	if errors.As(err, &list) && len(*list) > 0 {
		for _, e := range *list {
			logger.Error(msg, "file", e.File, "line", e.Line, "problem", e.Msg)
		}
		return
	}
	logger.Error(msg, "file", file, "err", err)
}

// stopBound bounds how long a shutdown waits for a running Apply and the
// engine together before it gives up and exits 1.
const stopBound = 10 * time.Second

func shutdown(cancel context.CancelFunc, runDone <-chan error, srv *http.Server, flush func(), rl *reloader, logger *slog.Logger, code int) int {
	deadline := time.Now().Add(stopBound)
	// A reload placing marks finishes first: the engine closes its groups
	// when it stops. One that is still reading the file is not waited for.
	select {
	case rl.applying <- struct{}{}:
	case <-time.After(time.Until(deadline)):
		logger.Error("a configuration reload is still placing marks; stopping without waiting for it")
		code = 1
	}
	// The engine next: its pending permission events are answered and
	// its queue handed to the sinks before anything else stops.
	cancel()
	select {
	case err := <-runDone:
		if err != nil {
			logger.Error("monitor engine", "err", err)
			code = 1
		}
	case <-time.After(time.Until(deadline)):
		logger.Error("monitor engine did not stop in time")
		code = 1
	}
	flush()
	ctx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	srv.Shutdown(ctx)
	return code
}

// stateSource is the engine's snapshot with the exporters' losses added:
// fsmon_events_dropped_total counts every event lost anywhere.
type stateSource struct {
	eng    *engine.Engine
	exp    *otelexp.Exporter
	stdout *jsonl.Queue // nil with --no-events.stdout
}

func (s stateSource) Snapshot() fsmon.State {
	st := s.eng.Snapshot()
	st.Drops[fsmon.DropExport] += s.exp.Dropped()
	if s.stdout != nil {
		st.Drops[fsmon.DropExport] += s.stdout.Dropped()
	}
	return st
}

func newServer(f *flags, reg *prometheus.Registry, eng *engine.Engine, logger *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle(f.metricsPath, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(logger.Handler(), slog.LevelError),
		MaxRequestsInFlight: f.maxRequests,
		Registry:            reg,
	}))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, "Healthy")
	})
	mux.Handle("/learned", learnedHandler{eng, logger})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !eng.Ready() {
			http.Error(w, "Not ready: marks are being placed", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "Ready")
	})
	if f.metricsPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "fsmon_exporter",
			Description: "File access monitor: fanotify and inotify events, denies and changes of important files",
			Profiling:   "false", // no pprof handlers are served
			Version:     version.Info(),
			Links: []web.LandingLinks{
				{Address: f.metricsPath, Text: "Metrics"},
				{Address: "/-/healthy", Text: "Health"},
				{Address: "/-/ready", Text: "Readiness"},
				{Address: "/learned", Text: "Learned set (JSON)"},
				{Address: "/learned?format=yaml", Text: "Configuration allowing what was learned (YAML)"},
			},
		})
		if err != nil {
			logger.Error("landing page", "err", err)
		} else {
			mux.Handle("/", landing)
		}
	}
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// nonEmpty drops empty values of a repeatable flag: an empty one turns
// the defaults off.
func nonEmpty(vs []string) []string {
	var out []string
	for _, v := range vs {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}
