package metrics

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/persistence"
)

// dashboard is the part of Grafana's dashboard JSON the tests look at.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int     `json:"id"`
	Type       string  `json:"type"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"` // a collapsed row's
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// DashboardQueries returns every PromQL expression of the dashboard:
// panel targets and template variable queries.
func dashboardQueries(t testing.TB) (dashboard, []string) {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(GrafanaDashboard, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var exprs []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			exprs = append(exprs, v.Definition)
		}
	}
	return d, exprs
}

var metricName = regexp.MustCompile(`\b(?:ferrymq|go|process)_[a-zA-Z0-9_]+`)

// TestGrafanaDashboard: the dashboard parses, every panel that queries
// has a data source and a PromQL target, and every metric it queries is
// one this package serves (histograms by their _bucket/_sum/_count
// series), so a renamed metric cannot leave a dashboard panel empty.
func TestGrafanaDashboard(t *testing.T) {
	d, exprs := dashboardQueries(t)
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard title %q uid %q, %d panels", d.Title, d.UID, len(d.Panels))
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: no data source variable or no target", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: empty expression", p.Title)
			}
		}
	}

	// An exporter with every source, so that every family exists.
	st, err := persistence.Open(t.TempDir(), persistence.Options{NoSync: true, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := core.NewBroker(core.Options{Store: st})
	defer b.Close()
	bridges := func() []bridge.Status { return []bridge.Status{{Name: "b", LastErrorAt: time.Now()}} }
	e := New(Sources{Broker: b, Store: st, Bridges: bridges, Version: "test"})
	fams, err := e.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, f := range fams {
		served[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				served[f.GetName()+s] = true
			}
		}
	}
	seen := map[string]bool{}
	for _, x := range exprs {
		names := metricName.FindAllString(x, -1)
		if len(names) == 0 {
			t.Errorf("expression queries no metric: %s", x)
		}
		for _, n := range names {
			seen[n] = true
			if !served[n] {
				t.Errorf("dashboard queries %s, which /metrics does not serve (in %s)", n, x)
			}
		}
	}
	t.Logf("%d expressions over %d metrics", len(exprs), len(seen))
}
