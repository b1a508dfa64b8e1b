package audit

import (
	"fmt"
	"sort"
	"strings"
)

// eventClass is an OCSF event class Bulwark accepts, with its activities.
type eventClass struct {
	uid        int
	name       string
	activities map[int]string
}

type activity struct {
	id   int
	name string
}

// activityOther is OCSF's "Other" activity, valid in every class when it
// comes with an activity name.
const activityOther = 99

// classes are the OCSF classes the platform emits (OCSF 1.3). An event of
// any other class is refused: the log is a record of security decisions,
// not a general-purpose store.
var classes = []eventClass{
	{1007, "Process Activity", map[int]string{1: "Launch", 2: "Terminate", 3: "Open", 4: "Inject", 5: "Set User ID"}},
	{2004, "Detection Finding", map[int]string{1: "Create", 2: "Update", 3: "Close"}},
	{3001, "Account Change", map[int]string{1: "Create", 2: "Enable", 3: "Password Change", 4: "Password Reset",
		5: "Disable", 6: "Delete", 7: "Attach Policy", 8: "Detach Policy", 9: "Lock", 10: "MFA Factor Enable", 11: "MFA Factor Disable"}},
	{3002, "Authentication", map[int]string{1: "Logon", 2: "Logoff", 3: "Authentication Ticket", 4: "Service Ticket Request",
		5: "Service Ticket Renew", 6: "Preauth"}},
	{3003, "Authorize Session", map[int]string{1: "Assign Privileges", 2: "Assign Groups"}},
	{3004, "Entity Management", map[int]string{1: "Create", 2: "Read", 3: "Update", 4: "Delete", 5: "Move", 6: "Enroll",
		7: "Unenroll", 8: "Enable", 9: "Disable", 10: "Activate", 11: "Deactivate", 12: "Suspend", 13: "Resume"}},
	{3005, "User Access Management", map[int]string{1: "Assign Privileges", 2: "Revoke Privileges"}},
	{4001, "Network Activity", map[int]string{1: "Open", 2: "Close", 3: "Reset", 4: "Fail", 5: "Refuse", 6: "Traffic", 7: "Listen"}},
	{4002, "HTTP Activity", map[int]string{1: "Connect", 2: "Delete", 3: "Get", 4: "Head", 5: "Options", 6: "Post", 7: "Put", 8: "Trace", 9: "Patch"}},
	{6001, "Web Resources Activity", map[int]string{1: "Create", 2: "Read", 3: "Update", 4: "Delete", 5: "Search", 6: "Import", 7: "Export", 8: "Share"}},
	{6002, "Application Lifecycle", map[int]string{1: "Install", 2: "Remove", 3: "Start", 4: "Stop", 5: "Restart", 6: "Enable", 7: "Disable", 8: "Update"}},
	{6003, "API Activity", map[int]string{1: "Create", 2: "Read", 3: "Update", 4: "Delete"}},
}

var classByUID, classByName = indexClasses()

func indexClasses() (byUID map[int]*eventClass, byName map[string]*eventClass) {
	byUID, byName = map[int]*eventClass{}, map[string]*eventClass{}
	for i := range classes {
		c := &classes[i]
		byUID[c.uid] = c
		byName[classKey(c.name)] = c
	}
	return byUID, byName
}

func classKey(name string) string {
	return strings.NewReplacer(" ", "", "_", "", "-", "").Replace(strings.ToLower(name))
}

// ClassNames lists the accepted class names, for error messages and docs.
func ClassNames() []string {
	out := make([]string, 0, len(classes))
	for _, c := range classes {
		out = append(out, fmt.Sprintf("%s (%d)", c.name, c.uid))
	}
	sort.Strings(out)
	return out
}

func resolveClass(uid int, name string) (*eventClass, error) {
	var byUID, byName *eventClass
	if uid != 0 {
		byUID = classByUID[uid]
		if byUID == nil {
			return nil, &ValidationError{Code: CodeUnknownClass, Msg: fmt.Sprintf("unknown event class_uid %d", uid)}
		}
	}
	if name != "" {
		byName = classByName[classKey(name)]
		if byName == nil {
			return nil, &ValidationError{Code: CodeUnknownClass, Msg: fmt.Sprintf("unknown event class_name %q", name)}
		}
	}
	switch {
	case byUID == nil && byName == nil:
		return nil, &ValidationError{Code: CodeUnknownClass, Msg: "event has no class_uid or class_name"}
	case byUID != nil && byName != nil && byUID != byName:
		return nil, &ValidationError{Code: CodeUnknownClass,
			Msg: fmt.Sprintf("class_uid %d (%s) does not match class_name %q", uid, byUID.name, name)}
	case byUID != nil:
		return byUID, nil
	default:
		return byName, nil
	}
}

func (c *eventClass) resolveActivity(id int, name string) (activity, error) {
	if id == activityOther {
		if name == "" {
			return activity{}, &ValidationError{Code: CodeUnknownActivity, Msg: "activity_id 99 (Other) needs an activity_name"}
		}
		return activity{id, name}, nil
	}
	if id != 0 {
		n, ok := c.activities[id]
		if !ok {
			return activity{}, &ValidationError{Code: CodeUnknownActivity,
				Msg: fmt.Sprintf("unknown activity_id %d for class %s", id, c.name)}
		}
		if name != "" && !strings.EqualFold(name, n) {
			return activity{}, &ValidationError{Code: CodeUnknownActivity,
				Msg: fmt.Sprintf("activity_id %d (%s) does not match activity_name %q", id, n, name)}
		}
		return activity{id, n}, nil
	}
	if name == "" {
		return activity{}, &ValidationError{Code: CodeUnknownActivity, Msg: "event has no activity_id or activity_name"}
	}
	for aid, n := range c.activities {
		if strings.EqualFold(name, n) {
			return activity{aid, n}, nil
		}
	}
	return activity{}, &ValidationError{Code: CodeUnknownActivity,
		Msg: fmt.Sprintf("unknown activity_name %q for class %s", name, c.name)}
}
