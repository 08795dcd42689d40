package mgmt

import (
	"cmp"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// maxPageSize is RabbitMQ's largest page_size.
const maxPageSize = 500

// listQuery is RabbitMQ's list parameters: page, page_size, name,
// use_regex, sort, sort_reverse, columns.
type listQuery struct {
	paged      bool
	page, size int
	name       string
	re         *regexp.Regexp
	sort       string
	reverse    bool
	columns    [][]string // dotted column paths, split
}

// parseListQuery reads the list parameters; on error it has answered 400.
func parseListQuery(w http.ResponseWriter, r *Request) (listQuery, bool) {
	q := r.URL.Query()
	lq := listQuery{page: 1, size: 100, name: q.Get("name"), sort: q.Get("sort"), reverse: q.Get("sort_reverse") == "true"}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			badRequest(w, fmt.Sprintf("page must be a positive integer: %q", v))
			return lq, false
		}
		lq.paged, lq.page = true, n
	}
	if v := q.Get("page_size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			badRequest(w, fmt.Sprintf("page_size must be a positive integer: %q", v))
			return lq, false
		}
		if n > maxPageSize {
			badRequest(w, fmt.Sprintf("page size %d is larger than %d", n, maxPageSize))
			return lq, false
		}
		lq.size = n
	}
	if lq.name != "" {
		pat := "(?i)" + regexp.QuoteMeta(lq.name)
		if q.Get("use_regex") == "true" {
			pat = lq.name
		}
		re, err := regexp.Compile(pat)
		if err != nil {
			badRequest(w, fmt.Sprintf("invalid regular expression %q: %v", lq.name, err))
			return lq, false
		}
		lq.re = re
	}
	if v := q.Get("columns"); v != "" {
		for _, c := range strings.Split(v, ",") {
			lq.columns = append(lq.columns, strings.Split(c, "."))
		}
	}
	return lq, true
}

// field returns item's value at a dotted path.
func field(item map[string]any, path []string) (any, bool) {
	var v any = item
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[p]; !ok {
			return nil, false
		}
	}
	return v, true
}

// compareValues orders JSON values: numbers by value, strings by text,
// missing ones first.
func compareValues(a, b any) int {
	fa, aNum := number(a)
	fb, bNum := number(b)
	if aNum && bNum {
		return cmp.Compare(fa, fb)
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// writeList answers a list as RabbitMQ does: a plain JSON array, or with
// page= the paged object; filtered by name, sorted by sort, cut to
// columns.
func writeList(w http.ResponseWriter, r *Request, items []map[string]any) {
	lq, ok := parseListQuery(w, r)
	if !ok {
		return
	}
	total := len(items)
	if lq.re != nil {
		kept := items[:0:0]
		for _, it := range items {
			if n, _ := it["name"].(string); lq.re.MatchString(n) {
				kept = append(kept, it)
			}
		}
		items = kept
	}
	if lq.sort != "" {
		path := strings.Split(lq.sort, ".")
		slices.SortStableFunc(items, func(a, b map[string]any) int {
			va, _ := field(a, path)
			vb, _ := field(b, path)
			return compareValues(va, vb)
		})
	}
	if lq.reverse {
		slices.Reverse(items)
	}
	filtered := len(items)
	if lq.paged {
		start, end, ok := lq.bounds(w, filtered)
		if !ok {
			return
		}
		lq.writePage(w, cutColumns(items[start:end], lq.columns), filtered, total)
		return
	}
	writeJSON(w, http.StatusOK, cutColumns(items, lq.columns))
}

// bounds returns the slice of n filtered items that lq's page holds; if
// the page is past the last, it answers 400 as RabbitMQ does and reports
// false.
func (lq *listQuery) bounds(w http.ResponseWriter, n int) (start, end int, ok bool) {
	if lq.page > max((n+lq.size-1)/lq.size, 1) {
		badRequest(w, fmt.Sprintf("page out of range, page: %d page size: %d, len: %d", lq.page, lq.size, n))
		return 0, 0, false
	}
	start = min((lq.page-1)*lq.size, n)
	return start, min(start+lq.size, n), true
}

// writePage answers with one page of items in RabbitMQ's paged envelope.
func (lq *listQuery) writePage(w http.ResponseWriter, items []map[string]any, filtered, total int) {
	writeJSON(w, http.StatusOK, map[string]any{
		"filtered_count": filtered, "item_count": len(items), "items": items, "page": lq.page,
		"page_count": (filtered + lq.size - 1) / lq.size, "page_size": lq.size, "total_count": total,
	})
}

// cutColumns keeps only the named (dotted) columns of each item.
func cutColumns(items []map[string]any, cols [][]string) []map[string]any {
	if items == nil {
		items = []map[string]any{}
	}
	if len(cols) == 0 {
		return items
	}
	out := make([]map[string]any, len(items))
	for i, it := range items {
		o := map[string]any{}
		for _, c := range cols {
			v, ok := field(it, c)
			if !ok {
				continue
			}
			m := o
			for _, p := range c[:len(c)-1] {
				sub, _ := m[p].(map[string]any)
				if sub == nil {
					sub = map[string]any{}
					m[p] = sub
				}
				m = sub
			}
			m[c[len(c)-1]] = v
		}
		out[i] = o
	}
	return out
}

// writeListOf is writeList for a long list of objects: when the order is
// by name (no sort, or sort=name), filtering and paging happen on the
// objects, already in name order, and only the page is rendered.
// Otherwise every object is rendered and writeList does the rest.
func writeListOf[T any](w http.ResponseWriter, r *Request, objs []T, name func(T) string, render func(T) map[string]any) {
	q := r.URL.Query()
	if s := q.Get("sort"); s != "" && s != "name" {
		items := make([]map[string]any, len(objs))
		for i, o := range objs {
			items[i] = render(o)
		}
		writeList(w, r, items)
		return
	}
	lq, ok := parseListQuery(w, r)
	if !ok {
		return
	}
	total := len(objs)
	if lq.re != nil {
		kept := objs[:0:0]
		for _, o := range objs {
			if lq.re.MatchString(name(o)) {
				kept = append(kept, o)
			}
		}
		objs = kept
	}
	if lq.reverse {
		objs = slices.Clone(objs)
		slices.Reverse(objs)
	}
	filtered := len(objs)
	if lq.paged {
		start, end, ok := lq.bounds(w, filtered)
		if !ok {
			return
		}
		objs = objs[start:end]
	}
	items := make([]map[string]any, len(objs))
	for i, o := range objs {
		items[i] = render(o)
	}
	items = cutColumns(items, lq.columns)
	if !lq.paged {
		writeJSON(w, http.StatusOK, items)
		return
	}
	lq.writePage(w, items, filtered, total)
}
