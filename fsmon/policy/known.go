package policy

import "github.com/fsmon/fsmon_exporter/fsmon"

// changeOps are the operations a filter's change events have.
var changeOps = []fsmon.Op{fsmon.OpWrite, fsmon.OpCreate, fsmon.OpDelete, fsmon.OpRename, fsmon.OpAttrib}

// KnownSeries lists the label sets of the event counters that this
// policy can produce and that are known before any event (see
// fsmon.KnownSeries): for each profile, the change events of every
// filter; the opens its block filters judge, as the profile's mode
// reports them (denied, violation or learned); report_access's allowed
// opens; and for each block filter of a profile that covers the host in
// protect or monitor mode, its denied or violation count there. Content
// events (op read, truncate, access) and timeouts are left to appear with
// the first one: they are rare, and a timeout has no profile.
func (p *Policy) KnownSeries() fsmon.KnownSeries {
	var k fsmon.KnownSeries
	for _, pr := range p.Profiles {
		k.Profiles = append(k.Profiles, pr.Name)
		seen := map[fsmon.EventSeries]bool{}
		add := func(kind fsmon.Kind, op fsmon.Op) {
			s := fsmon.EventSeries{Kind: kind, Op: op, Profile: pr.Name}
			if !seen[s] {
				seen[s] = true
				k.Events = append(k.Events, s)
			}
		}
		filters := map[string]bool{}
		for _, r := range pr.Rules {
			for _, op := range changeOps {
				add(fsmon.KindChange, op)
			}
			if r.ReportAccess {
				add(fsmon.KindAccess, fsmon.OpOpen)
			}
			if !r.Blocks() {
				continue
			}
			kind := outsider(r.Mode)
			add(kind, fsmon.OpOpen)
			if (kind == fsmon.KindDenied || kind == fsmon.KindViolation) && pr.AppliesToHost() && !filters[r.Name] {
				filters[r.Name] = true
				k.Filters = append(k.Filters, fsmon.FilterSeries{Kind: kind, Profile: pr.Name, Filter: r.Name})
			}
		}
	}
	return k
}
