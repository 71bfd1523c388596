// Package metricstest helps the tests of splitpoint's metrics: it turns
// collected or scraped metrics into a map of series to values, and lints
// an exposition with client_golang's promlint and, where installed,
// Prometheus's promtool.
package metricstest

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Series maps a series, written name{label="value",…} with its labels in
// name order (just name without labels), to its value. A histogram gives
// name_bucket{…,le="…"}, name_sum and name_count.
type Series map[string]float64

// Collect registers cs in a new registry, gathers it and returns its series.
func Collect(t testing.TB, cs ...prometheus.Collector) Series {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	return Gather(t, reg)
}

// Gather gathers g and returns its series.
func Gather(t testing.TB, g prometheus.Gatherer) Series {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return fromFamilies(mfs)
}

// Parse parses an exposition in the text format.
func Parse(text string) (Series, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	mfs := make([]*dto.MetricFamily, 0, len(fams))
	for _, mf := range fams {
		mfs = append(mfs, mf)
	}
	return fromFamilies(mfs), nil
}

func fromFamilies(mfs []*dto.MetricFamily) Series {
	out := Series{}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key(name, labels)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key(name, labels)] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					out[key(name+"_bucket", with(labels, "le", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
				out[key(name+"_bucket", with(labels, "le", "+Inf"))] = float64(h.GetSampleCount())
				out[key(name+"_sum", labels)] = h.GetSampleSum()
				out[key(name+"_count", labels)] = float64(h.GetSampleCount())
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				out[key(name+"_sum", labels)] = s.GetSampleSum()
				out[key(name+"_count", labels)] = float64(s.GetSampleCount())
			default:
				out[key(name, labels)] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func with(labels map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range labels {
		out[a] = b
	}
	return out
}

func key(name string, labels map[string]string) string {
	if len(labels) == 0 {
		return name
	}
	names := make([]string, 0, len(labels))
	for k := range labels {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s=%q", k, labels[k])
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// WithPrefix returns the series whose name starts with prefix.
func (s Series) WithPrefix(prefix string) Series {
	out := Series{}
	for k, v := range s {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// Equal reports the differences between got and want, one line each ("" :
// equal); values are equal when within 1e-9 relative.
func Equal(got, want Series) string {
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %s (want %v)", k, w))
		case !(g == w || math.Abs(g-w) <= 1e-9*math.Max(math.Abs(g), math.Abs(w))):
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %s = %v", k, g))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "\n")
}

// Lint returns promlint's problems with an exposition in the text format,
// one line each ("" : none).
func Lint(text string) (string, error) {
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		return "", err
	}
	var lines []string
	for _, p := range problems {
		lines = append(lines, fmt.Sprintf("%s: %s", p.Metric, p.Text))
	}
	return strings.Join(lines, "\n"), nil
}

// ErrNoPromtool is Promtool's error when promtool is not installed.
var ErrNoPromtool = fmt.Errorf("promtool not found: apt-get install prometheus (Debian's package ships it)")

// Promtool runs "promtool check metrics" on an exposition and returns its
// complaints ("" : none), or ErrNoPromtool.
func Promtool(text string) (string, error) {
	path, err := exec.LookPath("promtool")
	if err != nil {
		return "", ErrNoPromtool
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			if msg := strings.TrimSpace(out.String()); msg != "" {
				return msg, nil
			}
			return fmt.Sprintf("promtool exited with status %d", ee.ExitCode()), nil
		}
		return "", err
	}
	return strings.TrimSpace(out.String()), nil
}

// Scrape gets http://addr/metrics in the text format.
func Scrape(addr string) (string, error) {
	// No keep-alive: a test checking for leaked goroutines finds none of
	// the client's.
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", req.URL, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return "", fmt.Errorf("GET %s: content type %q", req.URL, ct)
	}
	return string(b), nil
}

// Check scrapes addr, fails t on promlint's problems and on promtool's
// complaints, and returns the series. A missing promtool fails t when
// needPromtool (the end-to-end tests: make test installs it), after the
// other checks, so that the test still reports everything else; the
// packages' own tests (make check) run it only where it is installed.
func Check(t testing.TB, addr string, needPromtool bool) Series {
	t.Helper()
	text, err := Scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	if problems, err := Lint(text); err != nil || problems != "" {
		t.Errorf("promlint on %s: %v\n%s", addr, err, problems)
	}
	switch msg, err := Promtool(text); {
	case err == ErrNoPromtool && !needPromtool:
	case err != nil:
		t.Errorf("promtool check metrics on %s: %v", addr, err)
	case msg != "":
		t.Errorf("promtool check metrics on %s:\n%s", addr, msg)
	}
	s, err := Parse(text)
	if err != nil {
		t.Fatalf("parsing the scrape of %s: %v", addr, err)
	}
	return s
}
