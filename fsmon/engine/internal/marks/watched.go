package marks

// WatchedFile is a covered file of one group: its path as walked (in the
// group's root) and the rules that cover it.
type WatchedFile struct {
	Path  string
	Rules []Rule
}

// WatchedFiles returns the covered files of g in the tables in force,
// for the baseline of watched files: copies, taken under the tables'
// lock (a walk of a million entries holds it for a few milliseconds,
// never across a system call).
func (m *Marks) WatchedFiles(g *group) []WatchedFile {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []WatchedFile
	for _, f := range m.tables.files {
		if f.g == g {
			out = append(out, WatchedFile{Path: f.path, Rules: append([]Rule(nil), f.rules...)})
		}
	}
	return out
}
