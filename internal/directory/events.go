package directory

import (
	"context"
	"fmt"
	"slices"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// OCSF class and activities of directory events.
const (
	classEntityMgmt = 3004
	actCreate       = 1
	actUpdate       = 3
	actDelete       = 4
)

// ResourceType is the audit resource type of a service.
const ResourceType = "service"

const eventProduct = "bulwark directory"

func serviceResource(s Service) audit.Resource {
	return audit.Resource{Type: ResourceType, UID: s.ID, Name: s.Name}
}

func serviceFields(s Service) map[string]any {
	eps := make([]any, 0, len(s.Endpoints))
	for _, e := range s.Endpoints {
		eps = append(eps, e)
	}
	dcs := make([]any, 0, len(s.DataClasses))
	for _, c := range s.DataClasses {
		dcs = append(dcs, c)
	}
	return map[string]any{"endpoints": eps, "owner": s.Owner, "data_classes": dcs, "region": s.Region}
}

func newEvent(ctx context.Context, activity int, detail, actor string, s Service) *audit.Event {
	return &audit.Event{ClassUID: classEntityMgmt, ActivityID: activity, StatusID: audit.StatusSuccess, SeverityID: 1,
		StatusDetail: detail, Actor: auditActor(ctx, actor), Resources: []audit.Resource{serviceResource(s)}}
}

func putEvent(ctx context.Context, actor string, created bool, prev, s Service) *audit.Event {
	if created {
		e := newEvent(ctx, actCreate, "service created", actor, s)
		e.Unmapped = serviceFields(s)
		return e
	}
	e := newEvent(ctx, actUpdate, "service updated", actor, s)
	e.Unmapped = serviceFields(s)
	var changed []any
	if prev.Name != s.Name {
		changed = append(changed, "name")
	}
	if !slices.Equal(prev.Endpoints, s.Endpoints) {
		changed = append(changed, "endpoints")
	}
	if prev.Owner != s.Owner {
		changed = append(changed, "owner")
	}
	if !slices.Equal(prev.DataClasses, s.DataClasses) {
		changed = append(changed, "data_classes")
	}
	if prev.Region != s.Region {
		changed = append(changed, "region")
	}
	if changed == nil {
		changed = []any{}
	}
	e.Unmapped["changed"] = changed
	if prev.Name != s.Name {
		e.Unmapped["previous_name"] = prev.Name
	}
	return e
}

func deleteEvent(ctx context.Context, actor string, prev Service) *audit.Event {
	e := newEvent(ctx, actDelete, "service deleted", actor, prev)
	e.Unmapped = serviceFields(prev)
	return e
}

// emit appends e to the audit log. A failure to audit fails the
// operation: nothing security-relevant happens unrecorded.
func (d *Directory) emit(ctx context.Context, e *audit.Event) error {
	e.Metadata.Product = eventProduct
	if _, err := d.audit.Append(ctx, []*audit.Event{e}); err != nil {
		return fmt.Errorf("audit %d/%d: %w", e.ClassUID, e.ActivityID, err)
	}
	return nil
}
