package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// learnFile is where the learned set is kept: --learn.state-file, else
// its file in --state.dir, else nowhere.
func (f *flags) learnFile() string {
	if f.learnStateFile != "" || f.stateDir == "" {
		return f.learnStateFile
	}
	return filepath.Join(f.stateDir, engine.LearnedFileName)
}

// learnedHandler serves GET /learned: the learned set as JSON, or with
// format=yaml the configuration in force with what was learned added to
// its allow lists and learn mode switched to protect, or with
// mode=monitor to monitor (policy.WithLearned).
type learnedHandler struct {
	eng    *engine.Engine
	logger *slog.Logger
}

func (h learnedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	learned := h.eng.LearnedSet()
	switch r.URL.Query().Get("format") {
	case "", "json":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(learned)
	case "yaml":
		pol := h.eng.Policy()
		if pol == nil {
			http.Error(w, "no configuration in force yet", http.StatusServiceUnavailable)
			return
		}
		ls := make([]policy.LearnedAllow, len(learned))
		for i, l := range learned {
			ls[i] = policy.LearnedAllow{Profile: l.Profile, Filter: l.Filter, Executable: l.Executable, Count: l.Count, First: l.First, Last: l.Last}
		}
		to := fsmon.ModeProtect
		if m := r.URL.Query().Get("mode"); m != "" {
			var ok bool
			if to, ok = fsmon.ParseMode(m); !ok || to == fsmon.ModeLearn {
				http.Error(w, "mode: want protect or monitor", http.StatusBadRequest)
				return
			}
		}
		out, err := policy.WithLearned(pol.Config, ls, to, time.Now())
		if err != nil {
			h.logger.Error("generating the configuration of the learned set", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
		w.Write(out)
	default:
		http.Error(w, "format: want json or yaml", http.StatusBadRequest)
	}
}
