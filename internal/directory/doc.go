// Package directory is the control plane's service directory: the catalog
// of services (SPIFFE ID, endpoints, owner, data classes held, region) that
// agents and gateways use to resolve destinations and that `bulwark
// services` shows. Every change is one transaction and one audit event;
// input is validated strictly and a refusal names the field.
package directory
