package ca

import (
	"context"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/keys"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func TestConfigFrom(t *testing.T) {
	good := config.CA{TrustDomain: "example.test", SVIDTTL: config.Duration(time.Hour), JWTSVIDTTL: config.Duration(5 * time.Minute),
		IntermediateTTL: config.Duration(720 * time.Hour), RotationOverlap: config.Duration(2 * time.Hour), JoinTokenTTL: config.Duration(10 * time.Minute)}
	cfg, err := ConfigFrom(good)
	if err != nil || cfg.TrustDomain.Name() != "example.test" || cfg.SVIDTTL != time.Hour {
		t.Fatalf("ConfigFrom = %+v, %v", cfg, err)
	}
	for name, mutate := range map[string]func(*config.CA){
		"bad trust domain":       func(c *config.CA) { c.TrustDomain = "Example Test" },
		"empty trust domain":     func(c *config.CA) { c.TrustDomain = "" },
		"zero SVID TTL":          func(c *config.CA) { c.SVIDTTL = 0 },
		"overlap below SVID TTL": func(c *config.CA) { c.RotationOverlap = config.Duration(time.Minute) },
		"intermediate too short": func(c *config.CA) { c.IntermediateTTL = config.Duration(time.Hour) },
	} {
		c := good
		mutate(&c)
		if _, err := ConfigFrom(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestMetrics(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		sealer, err := keys.OpenSealed(filepath.Join(t.TempDir(), "k"))
		if err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		// A second Authority on the same database (the first made the CA).
		a, err := New(ctx, env.cfg, Deps{DB: db, Sealer: env.sealer, RootStore: sealer, Audit: env.audit, Metrics: reg, Now: env.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		if v := gaugeValue(t, reg, "bulwark_ca_svid_soonest_expiry_seconds"); !math.IsInf(v, 1) {
			t.Fatalf("soonest expiry with no SVID = %v; want +Inf", v)
		}
		if v := gaugeValue(t, reg, "bulwark_ca_intermediate_expiry_seconds"); v < 719*3600 || v > 720*3600 {
			t.Fatalf("intermediate expiry = %v s", v)
		}
		if _, err := a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), env.id("/ns/a/sa/b"), 10*time.Minute, spiffeid.ID{}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), env.id("/ns/a/sa/b"), 0, spiffeid.ID{}); err != nil {
			t.Fatal(err)
		}
		if v := gaugeValue(t, reg, "bulwark_ca_svid_soonest_expiry_seconds"); v < 9*60 || v > 10*60 {
			t.Fatalf("soonest expiry = %v s; want about 600", v)
		}
		if v := gaugeValue(t, reg, "bulwark_ca_svids_issued_total"); v != 2 {
			t.Fatalf("issued = %v; want 2", v)
		}
		// After the short one expires, maintenance moves the gauge to the
		// next one.
		env.clock.Advance(11 * time.Minute)
		if err := a.maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if v := gaugeValue(t, reg, "bulwark_ca_svid_soonest_expiry_seconds"); v < 48*60 || v > 50*60 {
			t.Fatalf("soonest expiry after maintenance = %v s; want about 2940", v)
		}
	})
}
