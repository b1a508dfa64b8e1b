package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// OCSF class and activities of policy repository events.
const (
	repoClassEntityMgmt = 3004
	repoActCreate       = 1
	repoActUpdate       = 3
	repoActDelete       = 4
)

// Resource types in policy repository events.
const (
	repoResPolicySet  = "policy_set"
	repoResEntity     = "policy_entity"
	repoResBundleKey  = "policy_bundle_key"
	repoEventProduct  = "bulwark policy"
	repoMaxEventItems = 50
	repoMaxProblems   = 5
)

// newRepoEvent starts an event; ok selects success or failure.
func newRepoEvent(activity int, ok bool, detail string, actor Actor, res ...audit.Resource) *audit.Event {
	e := &audit.Event{ClassUID: repoClassEntityMgmt, ActivityID: activity, StatusDetail: detail, StatusID: audit.StatusFailure,
		SeverityID: 3, Actor: repoAuditActor(actor), Resources: res}
	if ok {
		e.StatusID, e.SeverityID = audit.StatusSuccess, 1
	}
	return e
}

// repoAuditActor is the OCSF actor of a change.
func repoAuditActor(a Actor) *audit.Actor {
	switch a.Kind {
	case "admin":
		return &audit.Actor{User: &audit.User{UID: a.ID, Type: "admin"}}
	case "":
		return &audit.Actor{AppName: repoEventProduct}
	default:
		return &audit.Actor{AppName: "bulwark " + a.Kind, AppUID: a.ID}
	}
}

// emit appends e to the audit log. A failure to audit fails the
// operation: nothing security-relevant happens unrecorded.
func (r *Repository) emit(ctx context.Context, e *audit.Event) error {
	e.Metadata.Product = repoEventProduct
	if _, err := r.audit.Append(ctx, []*audit.Event{e}); err != nil {
		return fmt.Errorf("audit %d/%d: %w", e.ClassUID, e.ActivityID, err)
	}
	return nil
}

// emitRefusal audits a refused change; the refusal stands whether or not
// the event could be written.
func (r *Repository) emitRefusal(ctx context.Context, e *audit.Event) {
	if err := r.emit(ctx, e); err != nil {
		r.log.Error("policy: audit refusal", slog.Any(logKeyRepoErr, err))
	}
}

func repoVersionResource(v int64) audit.Resource {
	return audit.Resource{Type: repoResPolicySet, UID: strconv.FormatInt(v, 10)}
}

func pushEvent(actor Actor, info VersionInfo, files map[string]string) *audit.Event {
	e := newRepoEvent(repoActCreate, true, "policy set pushed", actor, repoVersionResource(info.Version))
	names := slices.Sorted(maps.Keys(files))
	list := make([]any, 0, min(len(names), repoMaxEventItems))
	for _, n := range names[:min(len(names), repoMaxEventItems)] {
		list = append(list, n)
	}
	e.Unmapped = map[string]any{"files": list, "file_count": len(names), "digest": info.Digest, "comment": clipRepo(info.Comment, 256),
		"policies": info.Policies, "bundle_version": info.BundleVersion}
	return e
}

func rollbackEvent(actor Actor, info VersionInfo) *audit.Event {
	e := newRepoEvent(repoActUpdate, true, "policy set rolled back", actor, repoVersionResource(info.Version))
	e.Unmapped = map[string]any{"rollback_of": info.RollbackOf, "digest": info.Digest, "policies": info.Policies,
		"bundle_version": info.BundleVersion}
	return e
}

// pushRefusedEvent records a refused push (activity Create) or rollback
// (Update).
func pushRefusedEvent(actor Actor, activity int, problems []Problem) *audit.Event {
	e := newRepoEvent(activity, false, fmt.Sprintf("%d problems", len(problems)), actor, audit.Resource{Type: repoResPolicySet})
	first := make([]any, 0, repoMaxProblems)
	for _, p := range problems[:min(len(problems), repoMaxProblems)] {
		first = append(first, clipRepo(p.String(), 256))
	}
	e.Unmapped = map[string]any{"problems": first}
	return e
}

func entitiesEvent(actor Actor, replace bool, version int64, uids []string) *audit.Event {
	act, detail := repoActCreate, "entities upserted"
	if replace {
		act, detail = repoActUpdate, "entities replaced"
	}
	e := newRepoEvent(act, true, detail, actor, audit.Resource{Type: repoResEntity, UID: strconv.FormatInt(version, 10)})
	list := make([]any, 0, min(len(uids), repoMaxEventItems))
	for _, u := range uids[:min(len(uids), repoMaxEventItems)] {
		list = append(list, clipRepo(u, 256))
	}
	e.Unmapped = map[string]any{"entities_version": version, "count": len(uids), "uids": list, "replace": replace}
	return e
}

func entitiesRefusedEvent(actor Actor, replace bool, err error) *audit.Event {
	act := repoActCreate
	if replace {
		act = repoActUpdate
	}
	e := newRepoEvent(act, false, "entities refused", actor, audit.Resource{Type: repoResEntity})
	var ee *EntitiesError
	if errors.As(err, &ee) {
		e.StatusDetail = fmt.Sprintf("%d problems", len(ee.Problems))
		first := make([]any, 0, repoMaxProblems)
		for _, p := range ee.Problems[:min(len(ee.Problems), repoMaxProblems)] {
			first = append(first, clipRepo(p, 256))
		}
		e.Unmapped = map[string]any{"problems": first}
	}
	return e
}

func entityDeletedEvent(actor Actor, version int64, uid string) *audit.Event {
	e := newRepoEvent(repoActDelete, true, "entity deleted", actor, audit.Resource{Type: repoResEntity, UID: strconv.FormatInt(version, 10), Name: clipRepo(uid, 256)})
	e.Unmapped = map[string]any{"entities_version": version}
	return e
}

func keyCreatedEvent(id string) *audit.Event {
	return newRepoEvent(repoActCreate, true, "policy bundle signing key created", Actor{}, audit.Resource{Type: repoResBundleKey, UID: id})
}
