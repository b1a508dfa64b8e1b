// Package examples embeds the reference material that ships with Bulwark:
// the reference Cedar policies of the demo bank (policies/bank), which
// `bulwark dev` loads on its first start, and the demo bank's entities.
package examples

import (
	"embed"
	"io/fs"
)

//go:embed policies/bank/*.cedar policies/bank-entities.json
var files embed.FS

// BankPolicies returns the reference bank policy files, by file name.
func BankPolicies() (map[string]string, error) {
	names, err := fs.Glob(files, "policies/bank/*.cedar")
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(names))
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out[name[len("policies/bank/"):]] = string(b)
	}
	return out, nil
}

// BankEntities returns the demo bank's entities (a Cedar JSON entity
// array) for trust domain bulwark.local: roles, regions, data classes,
// the demo user and the demo services.
func BankEntities() ([]byte, error) {
	return files.ReadFile("policies/bank-entities.json")
}
